"""Further pretraining (masked-LM) with DeepSpeed ZeRO on packed token shards.

    deepspeed medtrain/pretrain.py CONFIG [k=v ...]        # also: python ..., mpirun -np N python ...,
    medtrain pretrain CONFIG [k=v ...]                     #       srun python ...

Run again with the same output_dir and it resumes from the last complete checkpoint, also on another number of
ranks if micro-batch x accumulation x ranks stays the same (pass the new data.micro_batch_size or train.grad_accum
as overrides). SIGTERM, SIGUSR1 and SIGUSR2 (what SLURM sends before a time limit or preemption) save a
checkpoint and stop.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep medtrain/ itself off the path so its modules don't shadow others

import argparse
import dataclasses
import itertools
import math
import signal
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from medtrain import checkpoint, dist, engine as engines
from medtrain.config import config_to_dict, load_config, save_resolved
from medtrain.data.masking import MaskedBatch, Masker, MaskingConfig, continuation_lookup
from medtrain.data.mixing import Sampling
from medtrain.data.shards import Manifest, read_manifest
from medtrain.data.stream import Audited, StatefulLoader, ValidationStream, build_train_loader, validation_loader
from medtrain.data.tokenizer import load_tokenizer
from medtrain.engine import EngineSpec, Precision, Schedule
from medtrain.errors import EXIT_PEER_LOST, UserError, run_reporting_errors
from medtrain.io import write_json_atomic
from medtrain.model import MaskedLM, ModelConfig, build_model, export
from medtrain.monitor import Monitor, memory_mb

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@dataclasses.dataclass
class DataConfig:
    shards: Path
    """Folder written by `medtrain prepare` (manifest.json + shards)."""
    micro_batch_size: int = 8
    """Sequences per rank per forward pass."""
    num_workers: int = 2
    """DataLoader worker processes per rank (masking runs in them); 0 reads in the training process."""
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    """Corpus mixing weights by corpus name; unset corpora keep the weight from the manifest."""
    sampling: Sampling = "uniform"
    """How weights become shares of the stream (medtrain/data/mixing.py): uniform (share proportional to the
    weight, whatever the corpus size: a small corpus is repeated), proportional (weight x size: weights are
    up/down-sampling factors, 1.0 natural) or temperature (languages get size ** (1/temperature), corpora share
    their language's part by weight x size)."""
    temperature: float = 1.0
    """For sampling: temperature. 1 is proportional; higher evens out languages (up-samples small ones)."""
    masking: MaskingConfig = dataclasses.field(default_factory=MaskingConfig)
    audit: bool = False
    """Write OUTPUT_DIR/audit/rank-R.jsonl: per optimizer step, the global ids of the sequences each rank trained
    on (ids: data/stream.py; a resumed run replaces the lines of the steps it redoes)."""

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1 or self.num_workers < 0:
            raise ValueError("data.micro_batch_size must be >= 1 and data.num_workers >= 0")
        if not self.temperature > 0:
            raise ValueError(f"data.temperature must be > 0, got {self.temperature}")


@dataclasses.dataclass
class TrainConfig:
    max_steps: int = 1000
    """Optimizer steps (each = micro_batch_size x grad_accum x world size sequences)."""
    max_tokens: int = 0
    """Stop earlier once this many tokens were trained on (0: no token limit)."""
    lr: float = 5e-5
    warmup_steps: int = 100
    schedule: Schedule = "linear"
    min_lr_ratio: float = 0.0
    """The learning rate decays to lr x min_lr_ratio at max_steps."""
    weight_decay: float = 0.01
    grad_accum: int = 1
    grad_clip: float = 1.0
    precision: Precision | None = None
    """fp32 | bf16 | fp16. Unset: the 16-bit mode the DeepSpeed JSON enables, else bf16 on GPUs that support it
    (Ampere and newer), else fp32; config.yaml records which."""
    fused_optimizer: bool | None = None
    """PyTorch's fused AdamW: one kernel for all parameters, on GPUs and CPUs (2-5x faster than its loop on CPU),
    nothing compiled at start-up. Unset: on, unless the DeepSpeed JSON offloads the optimizer (DeepSpeed's CPU
    Adam steps it there)."""
    activation_checkpointing: bool = False
    """Recompute activations in backward: less memory, about a third more compute."""
    compile: bool | None = None
    """torch.compile the encoder (fused kernels; the first steps pay the compilation: ~20 s for a small model
    on CPU). Unset: on with CUDA, off on CPU, and the run's config.yaml records which."""
    seed: int = 0
    """Fixes initialisation, data order and masking."""
    save_every: int = 200
    keep_last: int = 2
    eval_every: int = 200
    """Evaluate masked-LM loss and perplexity on the held-out shards every N steps (0: never)."""
    eval_batches: int = 0
    """Validation micro-batches per rank at each evaluation (0: the whole validation split, each sequence once)."""
    log_every: int = 1
    collective_timeout_s: int = 1800
    """A collective (all-reduce, barrier) that waits longer fails on the ranks that wait, which then exit: a host
    that dies or hangs ends the job instead of holding the others until the time limit. Longer than the slowest
    thing one rank does alone between collectives (rank 0's export)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "save_every", "log_every", "keep_last", "collective_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        if self.eval_every < 0 or self.eval_batches < 0 or self.max_tokens < 0:
            raise ValueError("train.eval_every, train.eval_batches and train.max_tokens must be >= 0")
        if self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ValueError("train.warmup_steps must be between 0 and train.max_steps")
        if not self.lr > 0:
            raise ValueError("train.lr must be > 0")


@dataclasses.dataclass
class PretrainConfig:
    output_dir: Path
    data: DataConfig
    model: ModelConfig
    deepspeed: Path = Path("ds_configs/zero2.json")
    """A ds_configs/*.json: the ZeRO stage and offload; everything else comes from this config."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    progress: bool = True


class StopRequested:
    """Remembers a stop signal so the loop can checkpoint at a step boundary (all ranks together)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum


def any_rank_stopping(stop: StopRequested, host_group: Any) -> bool:
    """Whether any rank was asked to stop: one all-reduce of a CPU flag per step, over `host_group` (gloo), so the
    ranks stop at the same step without waiting for their GPU."""
    flag = torch.tensor([0 if stop.signum is None else 1], dtype=torch.int32)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(flag, group=host_group)
    return bool(flag.item())


def mean_over_ranks(value: torch.Tensor) -> float:
    """A scalar on the device, averaged over ranks and read back: the step's one wait for the device, so it is
    called on log steps only."""
    value = value.detach().double().reshape(1)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        value /= torch.distributed.get_world_size()
    return value.item()


def resolve_device_defaults(t: TrainConfig, ds_config: Path) -> None:
    """Unset fast-path switches take the fast choice for this machine; config.yaml then records what ran. Called
    before any rank starts or writes, so a contradiction with the DeepSpeed JSON leaves nothing behind."""
    ds_json = engines.load_ds_json(ds_config)
    offloads_optimizer = engines.zero_layout(ds_json)[1] != "none"
    if t.fused_optimizer and offloads_optimizer:
        raise UserError("train.fused_optimizer: this JSON offloads the optimizer, which DeepSpeed's CPU Adam steps; "
                        "leave train.fused_optimizer unset or false", ds_config)
    if t.compile is None:
        t.compile = torch.cuda.is_available()
    if t.precision is None:
        t.precision = engines.default_precision(ds_json)
    if t.fused_optimizer is None:
        t.fused_optimizer = not offloads_optimizer


def build_masker(cfg: MaskingConfig, manifest: Manifest, shard_dir: Path) -> Masker:
    """Masking for the shards' vocabulary; whole-word masking reads the tokenizer's '##' pieces."""
    tokenizer_dir = manifest.tokenizer_dir(shard_dir)
    continuation = continuation_lookup(load_tokenizer(tokenizer_dir)) if cfg.whole_word else None
    return Masker(manifest.vocab_size, manifest.special_ids, cfg, continuation)


def evaluate(engine: Any, batches: Iterable[MaskedBatch], max_batches: int) -> dict[str, float]:
    """Masked-LM loss (mean over masked tokens, all ranks) and perplexity on the held-out shards."""
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=engine.device)  # on the device: NCCL reduces no CPU tensor
    with torch.no_grad():
        for masked in itertools.islice(batches, max_batches or None):
            loss = engine(*masked.to(engine.device))
            total[0] += loss.detach().double() * masked.num_masked
            total[1] += masked.num_masked
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    engine.train()
    loss = (total[0] / total[1].clamp(min=1)).item()
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


@dataclasses.dataclass
class Built:
    """What `build()` made: everything the training loop (or a benchmark timing it) needs."""

    info: dist.DistInfo
    manifest: Manifest
    loader: StatefulLoader
    """This rank's training batches; its state_dict() goes into every checkpoint."""
    validation: DataLoader | None
    """Held-out batches with fixed masks (None when train.eval_every is 0)."""
    model: MaskedLM
    engine: Any
    """The DeepSpeed engine wrapping `model`."""
    ckpt_dir: Path
    start_step: int
    """0, or the step of the checkpoint this run resumed from."""
    monitor: Monitor
    samples_per_step: int
    """Sequences per optimizer step, all ranks together."""
    host_group: Any = None
    """A gloo group for small CPU collectives (the stop flag): the world group on CPU, its own group beside NCCL."""
    audit: checkpoint.AuditLog | None = None
    """This rank's audit file (data.audit), trimmed to start_step."""

    @property
    def tokens_per_step(self) -> int:
        return self.samples_per_step * self.manifest.seq_len

    def close(self) -> None:
        """Flush and close what the run writes beside checkpoints (TensorBoard, history, the audit files)."""
        self.monitor.close()
        if self.audit is not None:
            self.audit.close()


def checkpoint_to_resume(ckpt_dir: Path, info: dist.DistInfo, micro_batch: int,
                         grad_accum: int) -> tuple[checkpoint.Saved | None, bool]:
    """The latest complete checkpoint, if any, and whether the engine must load it as a universal checkpoint:
    when another world size wrote it with its optimizer state cut per rank, converted here (rank 0, once)."""
    saved = checkpoint.latest(ckpt_dir)
    if saved is None:
        return None, False
    checkpoint.check_global_batch(saved, micro_batch, grad_accum, info.world_size)
    universal = saved.resized(info.world_size) and engines.partitioned_by_world(saved.folder)
    if universal:
        seconds = checkpoint.convert(saved, info.rank, engines.to_universal)
        if info.rank == 0:
            print(f"{saved.tag}: written by {saved.world_size} ranks, resuming on {info.world_size}; converted to "
                  f"a universal checkpoint in {seconds:.1f}s", file=sys.stderr)
    return saved, universal


def build(cfg: PretrainConfig, info: dist.DistInfo | None = None) -> Built:
    """Build a run in a fixed order (dist -> data -> model -> engine -> checkpoint -> monitor).

    `info` is this process's place in the job (default: what the launcher's environment says).
    """
    # 1. Who am I: rank, world size, and the process group (gloo on CPU, nccl on GPUs); under srun, threads
    #    as many as the CPUs SLURM gave the task (unless OMP_NUM_THREADS says otherwise).
    info = dist.discover() if info is None else info
    dist.use_slurm_threads()
    resolve_device_defaults(cfg.train, cfg.deepspeed)
    host_group = engines.init_process_group(info, timeout_s=cfg.train.collective_timeout_s)
    if info.rank == 0:
        if info.world_size > 1:
            print(f"{info.world_size} ranks ({info.launcher}), rendezvous at {info.rendezvous()}; collectives time "
                  f"out after {cfg.train.collective_timeout_s}s (train.collective_timeout_s)", file=sys.stderr)
    # 2. Data: the packed shards (their manifest read before rank 0 writes anything), this rank's slice of the
    #    stream, masking.
    d, t = cfg.data, cfg.train
    manifest = read_manifest(d.shards)
    if info.rank == 0:
        save_resolved(cfg, cfg.output_dir)
    masker = build_masker(d.masking, manifest, d.shards)
    loader = build_train_loader(d.shards, d.micro_batch_size, info.rank, info.world_size, seed=t.seed,
                                weights=d.weights, num_workers=d.num_workers, masker=masker, sampling=d.sampling,
                                temperature=d.temperature, with_ids=d.audit)
    validation = None
    if t.eval_every:  # fixed masks, so evaluations compare across steps; read in-process (it is short)
        validation = validation_loader(ValidationStream(d.shards, micro_batch=d.micro_batch_size, rank=info.rank,
                                                        world_size=info.world_size, seed=t.seed, masker=masker),
                                       num_workers=0)
    # 3. Model: initialisation is fixed by the seed and identical on every rank.
    torch.manual_seed(t.seed)
    model = build_model(cfg.model, manifest.vocab_size, t.activation_checkpointing)
    if t.compile:
        model.mlm.bert.compile()  # in place: parameter names, checkpoints and the export stay as they are
        if info.rank == 0:
            print("encoder compiled with torch.compile (train.compile); the first steps pay the compilation",
                  file=sys.stderr)
    # 4. Engine: DeepSpeed ZeRO with medtrain's batch sizes, optimizer and schedule, built to load the latest
    #    checkpoint as a universal one where another world size wrote it.
    ckpt_dir = cfg.output_dir / "checkpoints"
    saved, universal = checkpoint_to_resume(ckpt_dir, info, d.micro_batch_size, t.grad_accum)
    spec = EngineSpec(ds_config=cfg.deepspeed, micro_batch_size=d.micro_batch_size, grad_accum=t.grad_accum,
                      lr=t.lr, warmup_steps=t.warmup_steps, max_steps=t.max_steps, schedule=t.schedule,
                      min_lr_ratio=t.min_lr_ratio, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
                      precision=t.precision, load_universal=universal, fused_optimizer=t.fused_optimizer)
    engine = engines.initialize(model, spec, info.world_size)
    torch.manual_seed(t.seed * 1000 + info.rank + 1)  # dropout differs per rank, fixed per seed
    # 5. Checkpoint: resume from the latest complete one, loader position and RNG included.
    step = 0
    if saved is not None:
        state = checkpoint.resume(engine, saved, info.rank, info.world_size, t.seed, universal)
        step = state["step"]
        loader.load_state_dict(state["loader"])
    audit = checkpoint.AuditLog(cfg.output_dir, info.rank, info.world_size, step) if d.audit else None
    # 6. Monitor: TensorBoard + history.jsonl on rank 0.
    monitor = Monitor(cfg.output_dir, info.rank, step, t.max_steps, progress=cfg.progress)
    if step == 0:
        monitor.text("config", "```\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False) + "```")
    return Built(info, manifest, loader, validation, model, engine, ckpt_dir, step, monitor,
                 samples_per_step=d.micro_batch_size * t.grad_accum * info.world_size, host_group=host_group,
                 audit=audit)


def train_metrics(b: Built, step: int, loss: float, learning_rate: float, seconds: float) -> dict[str, float]:
    """The `train/*` scalars of a log step (`seconds`: wall time per step since the last one), named as the Hugging
    Face Trainer names them."""
    grad_norm = b.engine.get_global_grad_norm()  # None where DeepSpeed does not compute it (ZeRO 0, fp32)
    norm = {} if grad_norm is None else {"grad_norm": float(grad_norm)}
    return {"loss": loss, "learning_rate": learning_rate, **norm,
            "tokens_per_second": b.tokens_per_step / seconds, "samples_per_second": b.samples_per_step / seconds,
            "tokens_seen": step * b.tokens_per_step, "memory_mb": memory_mb(b.engine.device.type == "cuda")}


def train(cfg: PretrainConfig) -> int:
    """build(), then the loop; a collective that loses a peer (a host died or hangs) ends this rank with status 1
    and a log line saying so, instead of a traceback or a hang: the job ends, and SLURM's requeue (or the same
    command again) resumes from the last checkpoint."""
    stop = StopRequested()  # first: a signal that arrives while building must not kill the run unsaved
    b = build(cfg)
    try:
        return run_loop(cfg, b, stop)
    except RuntimeError as error:
        reason = dist.peer_loss(error) if b.info.world_size > 1 else None
        if reason is None:
            raise
        b.close()
        saved = checkpoint.latest(b.ckpt_dir)
        print(f"rank {b.info.rank}: a collective failed: {reason}\nrank {b.info.rank}: a peer died or stopped "
              f"answering within train.collective_timeout_s={cfg.train.collective_timeout_s}s; exiting. The next "
              f"start resumes from {saved.tag if saved else 'the beginning (no checkpoint yet)'}", file=sys.stderr)
        return EXIT_PEER_LOST


def run_loop(cfg: PretrainConfig, b: Built, stop: StopRequested) -> int:
    """The loop: step, log, evaluate, checkpoint; stop on a signal or at the step/token limit, then export."""
    t, out, engine, rank, step = cfg.train, cfg.output_dir, b.engine, b.info.rank, b.start_step

    def finished() -> bool:
        return step >= t.max_steps or bool(t.max_tokens and step * b.tokens_per_step >= t.max_tokens)

    def save() -> None:
        if b.audit is not None:
            b.audit.sync()
        checkpoint.save(engine, b.ckpt_dir, step, rank, b.info.world_size,
                        {"loader": b.loader.state_dict(), "grad_accum": t.grad_accum}, t.keep_last)

    if finished() and (out / "export").is_dir():
        b.close()
        if rank == 0:
            print(f"{out} is complete (step {step}, export/); nothing to do", file=sys.stderr)
        return 0
    batches = iter(b.loader)
    # Nothing in a step reads the device back: the loss stays a device tensor until a log step (the rate there is
    # per step since the window opened; evaluation and checkpoints, which wait for the device, open a new one).
    window_start, window_steps = time.perf_counter(), 0
    while not finished():
        lr = engine.get_lr()[0]  # the rate this step uses (the scheduler moves on in engine.step)
        step_loss, ids = torch.zeros((), device=engine.device), []
        for _ in range(t.grad_accum):
            batch = next(batches)
            if isinstance(batch, Audited):
                batch, ids = batch.batch, ids + batch.ids.tolist()
            loss = engine(*batch.to(engine.device))
            engine.backward(loss)
            engine.step()
            step_loss += loss.detach() / t.grad_accum
        step, window_steps = step + 1, window_steps + 1
        if b.audit is not None:
            b.audit.write(step, ids)
        stop_now = any_rank_stopping(stop, b.host_group)
        logged = step % t.log_every == 0
        if logged:
            mean_loss = mean_over_ranks(step_loss)
            seconds = (time.perf_counter() - window_start) / window_steps
            b.monitor.log(step, "train", train_metrics(b, step, mean_loss, lr, seconds))
        evaluated = b.validation is not None and (step % t.eval_every == 0 or finished())
        if evaluated:
            b.monitor.log(step, "eval", evaluate(engine, b.validation, t.eval_batches))
        if stop_now:
            save()
            b.close()
            print(f"rank {rank}: stopped by signal {stop.signum} at step {step}; checkpoint saved, "
                  "run again to resume", file=sys.stderr)
            return 0
        saved = step % t.save_every == 0 or finished()
        if saved:
            save()
        if logged or evaluated or saved:
            window_start, window_steps = time.perf_counter(), 0
    # Export: the full fp32 weights (gathered from ZeRO-3 shards) as a Hugging Face folder.
    full_state = engines.gather_full_state(engine)
    if rank == 0:  # what the run trained on, corpus by corpus, beside what the mix asked for
        write_json_atomic(out / "mixture.json", {
            "sampling": cfg.data.sampling, "temperature": cfg.data.temperature, "steps": step,
            "sequences": step * b.samples_per_step,
            "corpora": b.loader.stream.consumed_share(step * b.samples_per_step)})
        export({k.removeprefix("mlm."): v for k, v in full_state.items()}, b.model.mlm.config,
               cfg.model.tokenizer or cfg.model.init or b.manifest.tokenizer_dir(cfg.data.shards), out / "export")
        print(f"{out}: trained {step} steps; Hugging Face export in {out / 'export'}", file=sys.stderr)
    b.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Script entry (`deepspeed medtrain/pretrain.py CONFIG k=v`, mpirun, srun): bad input is one line, exit 2."""
    parser = argparse.ArgumentParser(prog="medtrain/pretrain.py", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="pretraining config (YAML or packaged recipe name)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=50 train.lr=1e-4")
    args = list(sys.argv[1:] if argv is None else argv)
    # The deepspeed launcher adds --local_rank=N; dist.discover() reads the same from the environment.
    parsed = parser.parse_args([a for a in args if not a.startswith(("--local_rank", "--local-rank"))])
    sys.exit(run_reporting_errors(lambda: train(load_config(PretrainConfig, parsed.config, parsed.overrides))))


if __name__ == "__main__":
    main()
