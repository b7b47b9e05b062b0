"""Run a benchmark matrix: each configuration in a fresh process, one JSON line per configuration.

    python benchmarks/run.py benchmarks/matrices/cpu-small.yaml            # the matrix
    python benchmarks/run.py MATRIX --find-max-batch [--rss-limit-mb N]    # largest micro-batch per stage, seq_len
    python benchmarks/run.py MATRIX --dry-run                              # list configurations and commands
    python benchmarks/run.py MATRIX --only hf --report                     # a subset, then the report

Results are appended to OUT/<matrix>-<host>-<date>.jsonl (OUT: benchmarks/results); `benchmarks/report.py`
turns that file into a markdown table and plots. A matrix file (see benchmarks/README.md):

    name: cpu-small
    defaults: {model: tiny, seq_len: 128, precision: fp32, warmup_steps: 3, measure_steps: 10}
    runs:                                   # blocks: the product of each block's lists; blocks add up
      - {deepspeed: [ds_configs/zero0.json, ds_configs/zero3.json], micro_batch: [4, 8]}
      - {system: [hf-padded, hf-grouped], micro_batch: 8}
    find_max_batch: {deepspeed: [ds_configs/zero0.json], seq_len: [128], start: 8, rss_limit_mb: 4000}
    scripts:                                # other benchmark scripts, run as they are (data.yaml)
      - {script: benchmarks/loader_bench.py, args: [--workers, 1, 2]}

Each configuration runs `benchmarks/worker.py` (medtrain) or `benchmarks/baseline_hf.py` (the Hugging Face
Trainer) in a new process: one `python` for one process, the `deepspeed` launcher for several on one node, `srun`
inside a SLURM allocation, or the matrix's `submit` command template (e.g. launchers/pretrain.py) for several
nodes. The benchmark data (the bundled sample corpora, packed per seq_len) is made once into benchmarks/.cache/.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import dataclasses
import datetime
import hashlib
import importlib.metadata
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, Literal

from medtrain.cluster.launch import rank_command
from medtrain.config import build_config, read_yaml, unknown_key_message
from medtrain.errors import UserError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
WORKER = HERE / "worker.py"
BASELINE = HERE / "baseline_hf.py"

MBERT_VOCAB = 119_547  # bert-base-multilingual-cased
# BertConfig fields; the names are sizes, not checkpoints: weights are random, only the shapes matter.
MODELS: dict[str, dict[str, int]] = {
    "mini": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
SYSTEMS = ("medtrain", "hf-padded", "hf-grouped")


@dataclasses.dataclass
class Axes:
    """One configuration; a matrix's `defaults` and `runs` blocks may set any field. Stage and offload are the
    engine settings pretraining uses: `deepspeed` names a ds_configs/*.json, `precision` is train.precision."""

    system: Literal["medtrain", "hf-padded", "hf-grouped"] = "medtrain"
    """hf-padded: the HF Trainer, line by line; hf-grouped: the HF Trainer with run_mlm's group_texts."""
    model: str | dict[str, Any] = "tiny"
    """A MODELS name, or a mapping of BertConfig fields."""
    vocab: int | str = "sample"
    """sample (the sample tokenizer's), mbert (119,547) or a number."""
    seq_len: int = 128
    micro_batch: int = 8
    """Sequences per process per forward pass."""
    grad_accum: int = 1
    deepspeed: str | None = "ds_configs/zero2.json"
    """The DeepSpeed JSON, as pretraining's `deepspeed:` (relative to the repository); none for the baselines."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    activation_checkpointing: bool = False
    attention: Literal["sdpa", "eager"] = "sdpa"
    """model.attention, for medtrain and the baselines alike (transformers' attn_implementation)."""
    compile: bool | None = None
    """medtrain's train.compile (unset: on with CUDA, off on CPU)."""
    fused_optimizer: bool | None = None
    """medtrain's train.fused_optimizer (unset: on unless the JSON offloads the optimizer). The Trainer baselines
    take the Trainer's default optimizer (fused AdamW with torch >= 2.8)."""
    procs: int = 1
    """Processes (GPUs) per node."""
    nodes: int = 1
    launcher: Literal["local", "srun", "submit"] = "local"
    """local (python / deepspeed) | srun | submit (the matrix's `submit` template)."""
    threads: int = 0
    """Torch threads per process on CPU; 0: the usable cores / procs."""
    num_workers: int = 1
    """DataLoader workers per process."""
    warmup_steps: int = 3
    measure_steps: int = 10
    seed: int = 0
    lr: float = 1e-4
    hf_padding: Literal["longest", "max_length"] | None = "longest"
    """hf-padded only: longest (the collator pads per batch) | max_length (to seq_len)."""
    rss_limit_mb: float = 0
    """A process whose RSS passes this is out of memory (0: no limit)."""

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"{label(dataclasses.asdict(self))}: {message}")

        if isinstance(self.model, str) and self.model not in MODELS:
            fail(f"model must be one of {', '.join(MODELS)} or a mapping of BertConfig fields, got {self.model!r}")
        if not (self.vocab in ("sample", "mbert") or (isinstance(self.vocab, int) and self.vocab > 0)):
            fail(f"vocab must be sample, mbert or a positive number, got {self.vocab!r}")
        for key in ("seq_len", "micro_batch", "grad_accum", "procs", "nodes", "measure_steps"):
            if getattr(self, key) < 1:
                fail(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        for key in ("warmup_steps", "threads", "num_workers", "seed"):
            if getattr(self, key) < 0:
                fail(f"{key} must be a non-negative integer, got {getattr(self, key)!r}")
        if not 8 <= self.seq_len <= 512:
            fail(f"seq_len must be between 8 and 512 (BERT's positions), got {self.seq_len}")
        if self.launcher == "local" and self.nodes > 1:
            fail("several nodes need launcher: srun or submit")
        if self.system == "medtrain":
            self.hf_padding = None
            if self.deepspeed is None:
                fail("medtrain needs deepspeed: a ds_configs/*.json")
            layout(dataclasses.asdict(self))  # the JSON exists and names a stage (UserError otherwise)
            return
        if self.procs * self.nodes != 1:
            fail("the Hugging Face baselines run one process (procs: 1, nodes: 1)")
        self.deepspeed = self.compile = self.fused_optimizer = None  # not applicable to the Trainer baseline
        if self.system == "hf-grouped":
            self.hf_padding = None
        elif self.hf_padding is None:
            self.hf_padding = "longest"  # normalize() may see a configuration it already normalised


@dataclasses.dataclass
class MaxBatchSearch:
    """`find_max_batch`: per DeepSpeed layout and seq_len, the largest micro-batch (other keys: axes to set)."""

    deepspeed: list[str] = dataclasses.field(
        default_factory=lambda: [f"ds_configs/zero{stage}.json" for stage in range(4)])
    seq_len: list[int] = dataclasses.field(default_factory=list)
    """Default: the matrix's seq_len."""
    start: int = 8
    limit: int = 4096
    step: int = 1
    """Stop bisecting within this many sequences."""
    rss_limit_mb: float = 0
    """CPU: a process above this RSS counts as out of memory (--rss-limit-mb overrides)."""


@dataclasses.dataclass
class Matrix:
    """A matrix file (benchmarks/README.md): configurations to run, and what else to run."""

    name: str = ""
    """Default: the file's name."""
    description: str = ""
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    runs: list[dict[str, Any]] | None = None
    """Blocks of axis: value or [values]; each block is the product of its lists (default: the defaults alone)."""
    find_max_batch: dict[str, Any] = dataclasses.field(default_factory=dict)
    scripts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    submit: str = ""
    """The command template for launcher: submit."""
    srun_args: list[str] = dataclasses.field(default_factory=list)
    timeout_s: float = 900
    data_scale: float = 1.0
    repeat: int = 1


# ----------------------------------------------------------------------------- the matrix


def load_matrix(path: Path) -> tuple[Matrix, dict[str, int]]:
    data, lines = read_yaml(Path(path))
    matrix = build_config(Matrix, data, Path(path), lines)
    matrix.name = matrix.name or Path(path).stem
    return matrix, lines


def expand(matrix: Matrix, path: Path = Path("<matrix>"), lines: dict[str, int] | None = None) -> list[dict]:
    """The matrix's configurations: defaults, then each `runs` block's product; duplicates collapse (first kept)."""
    lines = lines or {}
    blocks = matrix.runs if matrix.runs is not None else [{}] if matrix.defaults else []
    configs, seen = [], set()
    for i, block in enumerate(blocks):
        # each key's line: the block's own, else the default's; "" (the block itself) for a whole-config error
        where = {k: lines.get(f"defaults.{k}", 0) for k in matrix.defaults}
        where.update({k: lines.get(f"runs.{i}.{k}", 0) for k in block}, **{"": lines.get(f"runs.{i}", 0)})
        keys = list(block)
        values = [v if isinstance(v, list) else [v] for v in block.values()]
        for combo in itertools.product(*values):
            cfg = normalize({**matrix.defaults, **dict(zip(keys, combo))}, path, where)
            sig = signature(cfg)
            if sig not in seen:
                seen.add(sig)
                configs.append(cfg)
    return configs


def normalize(cfg: dict[str, Any], path: Path = Path("<matrix>"), lines: dict[str, int] | None = None) -> dict:
    """Check one configuration (config.build_config: unknown axes and bad values are UserErrors) and fill what
    follows from it; normalising twice changes nothing."""
    return dataclasses.asdict(build_config(Axes, cfg, path, {k: v for k, v in (lines or {}).items() if v}))


def layout(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ZeRO stage and offload that a medtrain configuration's DeepSpeed JSON sets (for the report)."""
    from medtrain.engine import load_ds_json, zero_layout  # imports torch: only once a configuration is checked

    if cfg["system"] != "medtrain":
        return {"zero": None, "offload": "none"}
    stage, offload = zero_layout(load_ds_json(REPO / cfg["deepspeed"]))
    return {"zero": stage, "offload": offload}


def signature(cfg: dict[str, Any]) -> str:
    """A short hash of the resolved configuration (its identity in results files)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]


def label(cfg: dict[str, Any]) -> str:
    """A readable one-line name: system model/vocab s<seq> mb<micro> <deepspeed JSON's name> precision procs..."""
    model = cfg.get("model")
    model = model if isinstance(model, str) else "custom"
    parts = [str(cfg.get("system")), f"{model}/{cfg.get('vocab')}", f"s{cfg.get('seq_len')}",
             f"mb{cfg.get('micro_batch')}"]
    if cfg.get("grad_accum", 1) != 1:
        parts.append(f"ga{cfg['grad_accum']}")
    if cfg.get("system") == "medtrain":
        parts.append(Path(str(cfg.get("deepspeed"))).stem)
    elif cfg.get("hf_padding"):
        parts.append(f"pad-{cfg['hf_padding']}")
    parts.append(str(cfg.get("precision")))
    if cfg.get("activation_checkpointing"):
        parts.append("ckpt")
    if cfg.get("attention", "sdpa") != "sdpa":
        parts.append(str(cfg["attention"]))
    if cfg.get("compile"):
        parts.append("compiled")
    if cfg.get("fused_optimizer") is False:
        parts.append("unfused")
    parts.append(f"{cfg.get('nodes')}x{cfg.get('procs')}p")
    return " ".join(parts)


def model_config(cfg: dict[str, Any]) -> dict[str, Any]:
    fields = dict(MODELS[cfg["model"]]) if isinstance(cfg["model"], str) else dict(cfg["model"])
    fields.setdefault("max_position_embeddings", 512)
    return fields


# ----------------------------------------------------------------------------- data and DeepSpeed configs


def ensure_cache() -> Path:
    """benchmarks/.cache/, ignoring itself so git never sees data, builds or logs (however .gitignore is set)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    marker = CACHE / ".gitignore"
    if not marker.is_file():
        marker.write_text("# benchmark data, JIT builds and run logs (written by benchmarks/run.py)\n*\n",
                          encoding="utf-8")
    return CACHE


def sample_data(scale: float) -> Path:
    """The bundled sample corpora and tokenizer, written once per scale into the cache."""
    from medtrain.data.sample import write_sample_data

    out = CACHE / f"sample-s{scale:g}"
    if (out / "prepare.yaml").is_file():
        return out
    tmp = CACHE / f"sample-s{scale:g}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"writing the sample corpora (scale {scale:g}) to {out} ...", flush=True)
    write_sample_data(tmp, seed=0, scale=scale)
    # prepare.yaml names the folder it was written in: point it at the final one before publishing
    text = (tmp / "prepare.yaml").read_text(encoding="utf-8").replace(str(tmp), str(out))
    (tmp / "prepare.yaml").write_text(text, encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def shards_for(seq_len: int, scale: float) -> Path:
    """Packed shards of the sample corpora at this seq_len (`medtrain prepare`, once)."""
    from medtrain.config import load_config
    from medtrain.data.pack import PrepareConfig, prepare

    data = sample_data(scale)
    out = data / f"shards-{seq_len}"
    if not (out / "manifest.json").is_file():
        print(f"packing the sample corpora at seq_len {seq_len} ...", flush=True)
        prepare(load_config(PrepareConfig, data / "prepare.yaml", [f"seq_len={seq_len}", f"output_dir={out}"]))
    return out


def pretrain_config(cfg: dict[str, Any], shards: Path, vocab: int, out_dir: Path) -> dict[str, Any]:
    """The pretraining config (medtrain.pretrain.PretrainConfig's keys) whose build() the worker times."""
    model = model_config(cfg) | ({"vocab_size": vocab} if vocab else {})
    return {
        "output_dir": str(out_dir), "deepspeed": str(REPO / cfg["deepspeed"]), "progress": False,
        "data": {"shards": str(shards), "micro_batch_size": cfg["micro_batch"], "num_workers": cfg["num_workers"]},
        "model": {"config": model, "attention": cfg["attention"]},
        "train": {"max_steps": cfg["warmup_steps"] + cfg["measure_steps"], "warmup_steps": 0, "schedule": "constant",
                  "lr": cfg["lr"], "grad_accum": cfg["grad_accum"], "precision": cfg["precision"],
                  "activation_checkpointing": cfg["activation_checkpointing"], "compile": cfg["compile"],
                  "fused_optimizer": cfg["fused_optimizer"], "seed": cfg["seed"], "eval_every": 0},
    }


def resolve(cfg: dict[str, Any], scale: float, folder: Path) -> dict[str, Any]:
    """What the worker reads: the configuration plus absolute paths, the model's fields and, for medtrain, the
    pretraining config and the stage and offload its DeepSpeed JSON sets."""
    shards = shards_for(cfg["seq_len"], scale)
    vocab = MBERT_VOCAB if cfg["vocab"] == "mbert" else 0 if cfg["vocab"] == "sample" else int(cfg["vocab"])
    data = sample_data(scale)
    out = {**cfg, "model_config": model_config(cfg), "vocab_size": vocab, "shards": str(shards),
           "tokenizer": str(shards / "tokenizer"),
           "corpora": sorted(str(p) for p in (data / "corpora").glob("*.jsonl"))}
    if cfg["system"] == "medtrain":
        out.update(layout(cfg), pretrain=pretrain_config(cfg, shards, vocab, folder / "pretrain"))
    return out


# ----------------------------------------------------------------------------- running one configuration


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def command(cfg: dict[str, Any], run_json: Path, out: Path, matrix: Matrix) -> list[str] | str:
    """The command line for one configuration (a string for the matrix's `submit` template, run by a shell)."""
    script = WORKER if cfg["system"] == "medtrain" else BASELINE
    args = [str(script), "--config", str(run_json), "--out", str(out)]
    if cfg["launcher"] == "srun":
        srun = ["srun", "--nodes", str(cfg["nodes"]), "--ntasks-per-node", str(cfg["procs"])]
        return [*srun, *matrix.srun_args, sys.executable, *args]
    if cfg["launcher"] == "submit":
        template = matrix.submit
        if not template:
            raise UserError("launcher: submit needs a `submit:` command template in the matrix")
        return template.format(python=shlex.quote(sys.executable), script=shlex.quote(str(script)),
                               config=shlex.quote(str(run_json)), out=shlex.quote(str(out)), nodes=cfg["nodes"],
                               procs=cfg["procs"], repo=shlex.quote(str(REPO)),
                               args=" ".join(shlex.quote(a) for a in args))
    return rank_command(script, args[1:], cfg["procs"])


def run_folder(work: Path, cfg: dict[str, Any], purpose: str = "matrix") -> Path:
    return work / f"{signature(cfg)}-{purpose}"


def run_one(cfg: dict[str, Any], matrix: Matrix, work: Path, timeout: float, scale: float,
            purpose: str = "matrix", repeat: int = 0, profile: Path | None = None) -> dict[str, Any]:
    """Run one configuration in a fresh process; its result line (status ok, oom, timeout or error). `profile`:
    a folder for torch.profiler's tables and traces of the measured steps (worker.StepProfile); the row's times
    are then not comparable with unprofiled rows."""
    sig = signature(cfg)
    folder = run_folder(work, cfg, purpose) if not repeat else run_folder(work, cfg, f"{purpose}-{repeat}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_json, out = folder / "run.json", folder / "result.json"
    resolved = resolve(cfg, scale, folder)
    if profile is not None:
        resolved["profile"] = str(profile / f"{sig}-{repeat}")
    run_json.write_text(json.dumps(resolved, indent=1), encoding="utf-8")
    cmd = command(cfg, run_json, out, matrix)
    env = dict(os.environ)
    if not _cuda():
        env.setdefault("DS_ACCELERATOR", "cpu")
    elif cfg["system"] != "medtrain":
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: Trainer would wrap several in DataParallel
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # DeepSpeed JIT-builds its CPU ops (shared-memory all-reduce, CPU Adam) into TORCH_EXTENSIONS_DIR. The shared
    # default (~/.cache/torch_extensions) is rebuilt whenever processes with other build flags use it (1-2 minutes
    # each time on 2 cores), which would land inside a configuration's timing: keep the benchmarks' builds apart.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(CACHE / "torch_extensions"))
    started = time.perf_counter()
    status = None
    with open(folder / "log.txt", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            if cfg["launcher"] == "submit" and rc == 0:  # a submitting command may return before the job ends
                deadline = started + timeout
                while (not out.is_file() and not any(folder.glob("result.rank*.json"))
                       and time.perf_counter() < deadline):
                    time.sleep(10)
                if not out.is_file() and time.perf_counter() >= deadline:
                    status = "timeout"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status = None, "timeout"
    wall = time.perf_counter() - started
    row: dict[str, Any] = {"bench": "train", "matrix": matrix.name, "id": sig, "name": label(cfg),
                           "purpose": purpose, "invocation": work.name, "repeat": repeat, "config": cfg, **layout(cfg),
                           "time": datetime.datetime.now().isoformat(timespec="seconds"),
                           "wall_s": round(wall, 1), "returncode": rc,
                           "command": cmd if isinstance(cmd, str) else shlex.join(cmd)}
    if profile is not None:
        row["profile"] = resolved["profile"]
    if out.is_file():
        row.update(json.loads(out.read_text(encoding="utf-8")))
        if rc not in (0, None) and row.get("status") == "ok":
            row["status"], row["error"] = "error", f"exit status {rc} after writing results"
        row["cpu"] = cpu_record(threads=(row.get("torch_threads") or [_threads(cfg)])[0])
        return row
    ranks = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("result.rank*.json"))]
    ooms = [r for r in ranks if r.get("status") == "oom"]
    tail = _tail(folder / "log.txt")
    if ooms:
        row.update(status="oom", oom=ooms)
    elif status == "timeout":
        row.update(status="timeout", error=f"no result within {timeout:.0f} s", log_tail=tail)
    elif "out of memory" in tail.lower() or rc in (-9, 137):
        row.update(status="oom", oom=[{"oom_kind": "killed" if rc in (-9, 137) else "log", "detail": tail[-500:]}])
    else:
        row.update(status="error", error=f"exit status {rc}", log_tail=tail)
    from worker import versions

    row["env"] = versions()
    row["cpu"] = cpu_record(threads=_threads(cfg))
    return row


def cpu_record(threads: int | None = None) -> dict[str, Any]:
    """The CPU fields every row carries (benchmarks/bench_cpu.py; imported here, as run.py is also loaded by
    the tests without benchmarks/ on the path)."""
    from bench_cpu import cpu_record as record

    return record(threads)


def _threads(cfg: dict[str, Any]) -> int:
    """Torch threads per process of a configuration on CPU (worker.cpu_threads' rule, without a process)."""
    return int(cfg.get("threads") or max(1, len(os.sched_getaffinity(0)) // max(1, cfg.get("procs", 1))))


def _kill_group(proc: subprocess.Popen) -> None:
    """The configuration's whole process group (launcher, ranks, loader workers), which we started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


# ----------------------------------------------------------------------------- the largest micro-batch


def search_max_batch(fits, start: int, limit: int, step: int = 1) -> tuple[int, list[int]]:
    """The largest micro-batch in [1, limit] for which `fits(mb)` holds: doubling from `start`, then bisection
    (to within `step`). Assumes fitting is monotone. Returns (largest fitting or 0, micro-batches probed)."""
    probed: list[int] = []

    def probe(mb: int) -> bool:
        probed.append(mb)
        return fits(mb)

    lo, hi, mb = 0, None, max(1, min(start, limit))
    while True:
        if probe(mb):
            lo = mb
            if mb >= limit:
                break
            mb = min(mb * 2, limit)
        else:
            hi = mb
            break
    if hi is not None:
        while hi - lo > step:
            mid = (lo + hi) // 2
            if probe(mid):
                lo = mid
            else:
                hi = mid
    return lo, probed


def find_max_batch(matrix: Matrix, base: dict[str, Any], results: Path, work: Path, timeout: float,
                   scale: float, rss_limit_mb: float | None, path: Path = Path("<matrix>")) -> list[dict[str, Any]]:
    searched = {f.name for f in dataclasses.fields(MaxBatchSearch)}
    for key in matrix.find_max_batch:
        if key not in searched and key not in base:
            raise UserError(f"find_max_batch.{key}: {unknown_key_message(key, searched | set(base))}", path)
    given = {k: v if isinstance(v, list) or k not in ("deepspeed", "seq_len") else [v]
             for k, v in matrix.find_max_batch.items() if k in searched}
    spec = build_config(MaxBatchSearch, given, path)
    # a probe needs to reach the first optimizer step (Adam states appear there) and one more, not a timing
    axes = {"warmup_steps": 1, "measure_steps": 2,
            **{k: v for k, v in matrix.find_max_batch.items() if k not in searched}}
    rss = rss_limit_mb if rss_limit_mb is not None else spec.rss_limit_mb
    cuda = _cuda()
    if not cuda and not rss:
        raise UserError("on CPU, --find-max-batch needs an RSS limit (--rss-limit-mb or find_max_batch.rss_limit_mb):"
                        " CPU memory has no out-of-memory error in practice")
    rows = []
    for deepspeed in spec.deepspeed:
        for seq_len in spec.seq_len or [base["seq_len"]]:
            probes = []
            name = f"{Path(deepspeed).stem} seq_len {seq_len}"

            def fits(mb: int) -> bool:
                cfg = normalize({**base, **axes, "deepspeed": deepspeed, "seq_len": seq_len, "micro_batch": mb,
                                 "rss_limit_mb": 0 if cuda else rss})
                row = run_one(cfg, matrix, work, timeout, scale, purpose="max_batch_probe")
                append(results, row)
                probes.append({"micro_batch": mb, "status": row["status"], **_memory_brief(row),
                               "tokens_per_s": (row.get("tokens_per_s") or {}).get("median")})
                print(f"  {name} micro-batch {mb}: {row['status']}", flush=True)
                return row["status"] == "ok"

            best, _ = search_max_batch(fits, spec.start, spec.limit, spec.step)
            template = normalize({**base, **axes, "deepspeed": deepspeed, "seq_len": seq_len})
            row = {"bench": "max_batch", "matrix": matrix.name, "name": label(template), "config": template,
                   **layout(template), "seq_len": seq_len, "max_micro_batch": best, "limit": spec.limit,
                   "capped": best >= spec.limit, "rss_limit_mb": None if cuda else rss,
                   "criterion": "CUDA out of memory" if cuda else f"RSS of any rank above {rss} MiB",
                   "probes": probes, "time": datetime.datetime.now().isoformat(timespec="seconds"),
                   "cpu": cpu_record(threads=_threads(template))}
            append(results, row)
            rows.append(row)
            capped = " (the limit)" if best >= spec.limit else ""
            print(f"{name}: largest micro-batch {best}{capped}")
    return rows


def _memory_brief(row: dict[str, Any]) -> dict[str, Any]:
    ranks = (row.get("memory") or {}).get("per_rank") or []
    out: dict[str, Any] = {}
    if ranks:
        out["rss_peak_mb"] = max(r.get("rss_peak_mb", 0) for r in ranks)
        if "cuda_max_reserved_mb" in ranks[0]:
            out["cuda_max_reserved_mb"] = max(r["cuda_max_reserved_mb"] for r in ranks)
    return out


# ----------------------------------------------------------------------------- other scripts (data.yaml)


def run_scripts(matrix: Matrix, results: Path, timeout: float) -> None:
    for item in matrix.scripts:
        script = REPO / item["script"]
        args = [str(a) for a in item.get("args", [])]
        cmd = [sys.executable, str(script), *args]
        print(f"$ {shlex.join(cmd)}", flush=True)
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
        try:
            rc = proc.wait(timeout=item.get("timeout_s", timeout))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        append(results, {"bench": "script", "matrix": matrix.name, "script": item["script"], "args": args,
                         "returncode": rc, "status": "ok" if rc == 0 else "timeout" if rc is None else "error",
                         "wall_s": round(time.perf_counter() - started, 1),
                         "results": "the script appends its own lines to "
                                    "benchmarks/results/<bench>-<host>-<date>.jsonl",
                         "time": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_record()})


# ----------------------------------------------------------------------------- main


# What rows and flags need beyond medtrain's own dependencies: pyproject's `bench` extra (`make bench` installs it).
NEEDS = {"accelerate": "1.1.0", "matplotlib": "3.7"}  # transformers' Trainer refuses older accelerate


def missing_requirements(configs: list[dict[str, Any]], report: bool,
                         installed: Callable[[str], str | None]) -> list[str]:
    """`name>=version` for each package the run needs and `installed(name)` (its version, or None) lacks:
    accelerate for the Trainer baseline rows, matplotlib for --report. Checked before the first row, so a
    matrix does not run its medtrain rows and then fail every baseline one."""
    from packaging.version import Version

    wanted = (["accelerate"] if any(c["system"] != "medtrain" for c in configs) else []) + \
        (["matplotlib"] if report else [])
    return [f"{name}>={NEEDS[name]}" for name in wanted
            if (version := installed(name)) is None or Version(version) < Version(NEEDS[name])]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def results_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}-{socket.gethostname()}-{datetime.date.today().isoformat()}.jsonl"


def _brief(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('error') or (row.get('oom') or [{}])[0].get('detail', '')}"[:160]
    tps = row["tokens_per_s"]
    return (f"{tps['median']:>10,.0f} tokens/s (p10-p90 {tps['p10']:,.0f}-{tps['p90']:,.0f}), "
            f"step {row['step_time_s']['median'] * 1e3:,.0f} ms, data wait {row['data_wait_fraction']:.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("matrix", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--find-max-batch", action="store_true",
                        help="search the largest micro-batch per ZeRO stage and seq_len instead of running the matrix")
    parser.add_argument("--rss-limit-mb", type=float, default=None, help="CPU: the RSS per process that counts as OOM")
    parser.add_argument("--only", action="append", default=[],
                        help="run configurations whose name or id contains this (repeatable; any matches)")
    parser.add_argument("--dry-run", action="store_true", help="list the configurations and their commands")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per configuration (matrix: timeout_s)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="run the whole list N times, round robin, so load from other jobs hits every "
                             "configuration alike; the report takes the median run (matrix: repeat, default 1)")
    parser.add_argument("--report", action="store_true", help="run benchmarks/report.py on the results afterwards")
    parser.add_argument("--profile", action="store_true",
                        help="profile the measured steps (torch.profiler): results, operator tables and traces go "
                             "to OUT/profiled/, apart from the timings")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    ensure_cache()
    matrix, lines = load_matrix(args.matrix)
    configs = expand(matrix, args.matrix, lines)
    if args.only:
        configs = [c for c in configs if any(o in label(c) or o in signature(c) for o in args.only)]
    timeout = float(args.timeout or matrix.timeout_s)
    scale = matrix.data_scale
    results = results_path(args.out / "profiled" if args.profile else args.out, matrix.name)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = CACHE / "runs" / f"{matrix.name}-{stamp}"

    if args.dry_run:
        for cfg in configs:
            folder = run_folder(work, cfg)
            cmd = command(cfg, folder / "run.json", folder / "result.json", matrix)
            print(f"{signature(cfg)}  {label(cfg)}\n    {cmd if isinstance(cmd, str) else shlex.join(cmd)}")
        if matrix.find_max_batch:
            print(f"find_max_batch: {matrix.find_max_batch}")
        for item in matrix.scripts:
            print(f"script: {item['script']} {' '.join(map(str, item.get('args', [])))}")
        return 0

    missing = missing_requirements([] if args.find_max_batch else configs, args.report, installed_version)
    if missing:
        raise UserError(f"this run needs {', '.join(missing)}, not installed in {sys.prefix}: "
                        f"{sys.executable} -m pip install -e '.[bench]' (make bench does it)", args.matrix)
    print(f"{matrix.name}: results appended to {results}; logs in {work}", flush=True)
    if args.find_max_batch:
        if not matrix.find_max_batch:
            raise UserError("this matrix has no find_max_batch section", args.matrix)
        base = normalize({**matrix.defaults, "system": "medtrain"}, args.matrix)
        find_max_batch(matrix, base, results, work, timeout, scale, args.rss_limit_mb, args.matrix)
    else:
        run_scripts(matrix, results, timeout)
        total = time.perf_counter()
        repeats = int(args.repeat or matrix.repeat)
        for repeat in range(repeats):
            for i, cfg in enumerate(configs, 1):
                print(f"[{i}/{len(configs)}{f' run {repeat + 1}/{repeats}' if repeats > 1 else ''}] {label(cfg)}",
                      flush=True)
                row = run_one(cfg, matrix, work, timeout, scale, repeat=repeat,
                              profile=results.parent if args.profile else None)
                append(results, row)
                print(f"    {_brief(row)}  ({row['wall_s']:.0f} s)", flush=True)
                if row.get("profile"):
                    print(f"    profile: {row['profile']}/ops-rank0.txt", flush=True)
        if configs:
            print(f"{len(configs)} configurations x {repeats} in {time.perf_counter() - total:.0f} s; "
                  f"results in {results}")
    if args.report:
        subprocess.run([sys.executable, str(HERE / "report.py"), str(results)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
