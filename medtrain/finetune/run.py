"""One fine-tuning run, `medtrain finetune CONFIG [k=v ...]`: build in a fixed order, loop over epochs, then
evaluate the best epoch on every test language and write results.json (see the package docstring)."""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from medtrain import dist
from medtrain.config import config_to_dict, save_resolved
from medtrain.data.tokenizer import load_tokenizer
from medtrain.finetune.checkpoint import check_same_config, load_best, load_checkpoint, new_state, save_checkpoint
from medtrain.finetune.config import CHECKPOINT, RESULTS, FinetuneConfig, TrainConfig, check_inputs
from medtrain.finetune.model import autocast, build_optimizer, collate, load_model, make_predict, \
    resolve_device_defaults, to_device
from medtrain.finetune.ner import NerTask
from medtrain.finetune.screening import ScreeningTask
from medtrain.finetune.task import Example, Predict, Task
from medtrain.io import replace_dir_atomic, write_json_atomic
from medtrain.monitor import Monitor

TASKS: dict[str, type[Task]] = {"ner": NerTask, "screening": ScreeningTask}
GROUP_BATCHES = 50
"""Length grouping sorts chunks of this many batches: enough sequences that neighbours in length are close, few
enough that a batch's members still come from anywhere in the data, and the chunk stays small in memory."""


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of an epoch depends only on (seed, epoch), so a resumed run replays it exactly."""
    return torch.randperm(n, generator=_generator(seed, epoch)).tolist()


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool) -> list[list[int]]:
    """An epoch's batches of example indices, a function of (lengths, batch_size, seed, epoch) only, so a resumed
    run replays its epoch exactly. Grouped by length: the seeded permutation is cut into chunks of GROUP_BATCHES
    batches, each sorted longest first and cut into batches, and the batches are shuffled by the same generator
    (only the last chunk's last batch can be short). Not grouped: the permutation cut in order."""
    if not group_by_length:
        order = epoch_order(len(lengths), seed, epoch)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    generator = _generator(seed, epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = GROUP_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        by_length = sorted(order[start:start + chunk], key=lambda i: -lengths[i])  # stable: ties keep their order
        batches += [by_length[i:i + batch_size] for i in range(0, len(by_length), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def finetune(cfg: FinetuneConfig) -> int:
    """Build in a fixed order (threads -> inputs -> data -> device -> model -> run folder -> features -> optimizer
    -> checkpoint -> monitor), then loop over epochs, then evaluate the best epoch on every test language."""
    out, t = cfg.output_dir, cfg.train
    if (out / RESULTS).is_file():
        print(f"{out}: already complete ({RESULTS} exists); nothing to do")
        return 0
    # 1. Threads: under srun (a SLURM array task) as many as the task's CPUs, not one per core of the node.
    dist.use_slurm_threads()
    # 2. Inputs and data: every path checked and every file read before the run folder is touched.
    check_inputs(cfg)
    tokenizer = load_tokenizer(cfg.model)
    task = TASKS[cfg.task](cfg)
    # 3. Device and model: unset fast-path switches resolved for this machine; the pretrained encoder and a new
    #    head, initialised from the seed.
    device = resolve_device_defaults(t)
    model = load_model(task, cfg.model, t, len(tokenizer)).to(device)
    # 4. Run folder: the resolved config; an unfinished run with another config is refused.
    check_same_config(cfg)
    save_resolved(cfg, out)
    # 5. Features: tokenized once per (tokenizer, task settings, input file), cached.
    task.encode(tokenizer, t.max_length, cfg.cache_dir or out / "cache", cfg.model)
    examples = task.train_examples()
    steps_per_epoch = math.ceil(len(examples) / t.batch_size)
    # 6. Optimizer and schedule.
    optimizer, schedule = build_optimizer(model, t, steps_per_epoch * t.epochs)
    # 7. Checkpoint: resume after the last finished epoch, RNG included; else start dropout from the seed.
    torch.manual_seed(t.seed + 1)
    state = load_checkpoint(out / CHECKPOINT, model, optimizer, schedule) or new_state()
    if state["epoch"]:
        print(f"resuming {out} after epoch {state['epoch']} of {t.epochs}", file=sys.stderr)
    # 8. Monitor: TensorBoard scalars and history.jsonl (events after the checkpoint are dropped).
    monitor = Monitor(out, 0, state["step"], steps_per_epoch * t.epochs, progress=cfg.progress,
                      events_dir=cfg.tensorboard_dir)
    loop = Loop(model, task, examples, optimizer, schedule, t, tokenizer.pad_token_id, device, monitor)
    predict = make_predict(model, t.eval_batch_size, tokenizer.pad_token_id, device, t.precision)
    model.train()
    for epoch in range(state["epoch"], t.epochs):
        started = time.perf_counter()
        state["step"] = _train_epoch(loop, epoch, state["step"])
        dev = task.score_dev(task.predict(predict, "dev"))
        monitor.log(state["step"], "eval", {k: float(v) for k, v in dev.items() if isinstance(v, (int, float))})
        score = -1.0 if dev["f1"] is None else dev["f1"]  # an undefined F1 still lets the first epoch be best
        improved = score > state["best"]["f1"]
        if improved:
            state["best"] = {"epoch": epoch + 1, "f1": score}
        state.update(epoch=epoch + 1, train_time_s=state["train_time_s"] + time.perf_counter() - started)
        save_checkpoint(out / CHECKPOINT, state, model, optimizer, schedule, improved)
    monitor.close()
    load_best(out / CHECKPOINT, model, state, device)
    write_results(cfg, task, model, tokenizer, predict, state, device)
    return 0


@dataclasses.dataclass
class Loop:
    """What every training step needs, built once: the loop carries this one state, not a dozen arguments."""

    model: Any
    task: Task
    examples: list[Example]
    optimizer: torch.optim.Optimizer
    schedule: Any
    t: TrainConfig
    pad_id: int
    device: torch.device
    monitor: Monitor
    params: list[torch.nn.Parameter] = dataclasses.field(init=False)
    """The trainable parameters, listed once (model.parameters() walks every module, each step)."""

    def __post_init__(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]


def _train_epoch(loop: Loop, epoch: int, step: int) -> int:
    """One pass over the training examples; returns the new global step. The loss stays on the device, summed
    there, and is read back on log steps only, so the host queues steps without waiting for each one."""
    t = loop.t
    batches = epoch_batches([len(x) for x, _ in loop.examples], t.batch_size, t.seed, epoch, t.group_by_length)
    loss_sum, summed = torch.zeros((), dtype=torch.float64, device=loop.device), 0
    for k, batch in enumerate(batches):
        ids, mask, labels = to_device(collate([loop.examples[i] for i in batch], loop.pad_id), loop.device)
        with autocast(t.precision, loop.device):
            loss = loop.task.loss(loop.model(input_ids=ids, attention_mask=mask).logits, labels)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(loop.params, t.grad_clip)
        lr = loop.schedule.get_last_lr()[0]
        loop.optimizer.step()
        loop.schedule.step()
        loop.optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_sum += loss.detach()
        summed += 1
        if step % t.log_every == 0 or k == len(batches) - 1:  # the Hugging Face Trainer's names; epoch fractional
            loop.monitor.log(step, "train", {"loss": (loss_sum / summed).item(), "learning_rate": lr,
                                             "epoch": step / len(batches)})
            loss_sum.zero_()
            summed = 0
    return step


def write_results(cfg: FinetuneConfig, task: Task, model: Any, tokenizer: Any, predict: Predict,
                  state: dict[str, Any], device: torch.device) -> None:
    """Dev (screening: the threshold) -> every test language -> predictions -> results.json, from the weights
    in `model` (the best epoch's)."""
    out = cfg.output_dir
    dev = task.score_dev(task.predict(predict, "dev"))
    predictions = task.predict(predict, "test")
    test = task.score_test(predictions, dev, cfg.eval)
    replace_dir_atomic(out / "predictions", lambda tmp: task.write_predictions(predictions, dev, tmp))
    if cfg.save_model:
        replace_dir_atomic(out / "model", lambda tmp: (model.save_pretrained(str(tmp)),
                                                       tokenizer.save_pretrained(str(tmp))))
    results = {
        "task": cfg.task, "model": str(cfg.model), "seed": cfg.train.seed,
        "train_languages": list(cfg.data.train), "dev_languages": list(cfg.data.dev),
        "eval_languages": list(cfg.data.test), "format": cfg.data.format,
        "hparams": config_to_dict(cfg.train) | ({"screening": config_to_dict(cfg.screening)}
                                                if cfg.task == "screening" else {}),
        "labels": task.labels, "sizes": task.sizes(), "best_epoch": state["best"]["epoch"], "dev": dev,
        "epochs": cfg.train.epochs, "train_time_s": round(state["train_time_s"], 3), "device": str(device),
        "bootstrap": {**config_to_dict(cfg.eval), "unit": task.unit}, "test": test,
        **({"label_space": task.label_space(), "reading": task.reading()} if isinstance(task, NerTask) else {}),
    }
    write_json_atomic(out / RESULTS, results)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)  # the run is complete: nothing left to resume
    summary = ", ".join(f"{lang} f1 {_fmt(r['f1']['value'])}" for lang, r in test.items())
    print(f"{out / RESULTS}: best epoch {state['best']['epoch']}, {summary}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
