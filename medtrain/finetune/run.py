"""One fine-tuning run, `medtrain finetune CONFIG [k=v ...]`: build in a fixed order, loop over epochs, then
evaluate the best epoch on every test language and write results.json (see the package docstring)."""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import Any

import torch

from medtrain import dist
from medtrain.config import config_to_dict, save_resolved
from medtrain.data.tokenizer import load_tokenizer
from medtrain.finetune.checkpoint import check_same_config, load_best, load_checkpoint, new_state, save_checkpoint
from medtrain.finetune.config import CHECKPOINT, RESULTS, FinetuneConfig, TrainConfig, check_inputs
from medtrain.finetune.model import build_optimizer, collate, load_model, make_predict
from medtrain.finetune.ner import NerTask
from medtrain.finetune.screening import ScreeningTask
from medtrain.finetune.task import Example, Predict, Task
from medtrain.io import replace_dir_atomic, write_json_atomic
from medtrain.monitor import Monitor

TASKS: dict[str, type[Task]] = {"ner": NerTask, "screening": ScreeningTask}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of an epoch depends only on (seed, epoch), so a resumed run replays it exactly."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def finetune(cfg: FinetuneConfig) -> int:
    """Build in a fixed order (threads -> inputs -> data -> model -> run folder -> features -> optimizer ->
    checkpoint -> monitor), then loop over epochs, then evaluate the best epoch on every test language."""
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
    # 3. Model: the pretrained encoder and a new head, initialised from the seed.
    model = load_model(task, cfg.model, t.seed, t.max_length, len(tokenizer))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
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
    predict = make_predict(model, t.eval_batch_size, tokenizer.pad_token_id, device)
    model.train()
    for epoch in range(state["epoch"], t.epochs):
        started = time.perf_counter()
        state["step"] = _train_epoch(model, task, examples, epoch_order(len(examples), t.seed, epoch), optimizer,
                                     schedule, t, tokenizer.pad_token_id, device, monitor, state["step"])
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


def _train_epoch(model: Any, task: Task, examples: list[Example], order: list[int], optimizer: Any, schedule: Any,
                 t: TrainConfig, pad_id: int, device: torch.device, monitor: Monitor, step: int) -> int:
    """One pass over the training examples; returns the new global step."""
    losses: list[float] = []
    starts = range(0, len(order), t.batch_size)
    for k, start in enumerate(starts):
        ids, mask, labels = (x.to(device) for x in collate([examples[i] for i in order[start:start + t.batch_size]],
                                                           pad_id))
        loss = task.loss(model(input_ids=ids, attention_mask=mask).logits, labels)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(loss.item())
        if step % t.log_every == 0 or k == len(starts) - 1:  # the Hugging Face Trainer's names; epoch fractional
            monitor.log(step, "train", {"loss": sum(losses) / len(losses), "learning_rate": lr,
                                        "epoch": step / len(starts)})
            losses = []
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
