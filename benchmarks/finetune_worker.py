"""One fine-tuning benchmark run, in a fresh process (started by benchmarks/finetune_bench.py).

    python benchmarks/finetune_worker.py --config RUN.json --out RESULT.json

RUN.json names the system and holds a resolved fine-tuning config (`finetune`, medtrain's FinetuneConfig keys,
paths absolute):

* medtrain: `medtrain.finetune.run.finetune(cfg)`, the run `medtrain finetune` makes, with the config's defaults
  plus the matrix's `overrides` (none by default: whatever medtrain's default path is). Its task is wrapped to
  time the dev evaluation after each epoch, which `train_time_s` includes; training time is `train_time_s`
  minus those evaluations. Test F1 comes from its results.json (the best dev epoch's weights).
* trainer: the Hugging Face Trainer as transformers' token-classification example sets it up
  (AutoModelFor{Token,Sequence}Classification from the same folder, DataCollatorFor{TokenClassification,
  WithPadding}, TrainingArguments' defaults apart from epochs, batch size, learning rate and seed), trained on
  the features medtrain's own task reads and tokenizes (the same windows, labels and -100s), so both systems
  see identical examples. Training time is the sum of its epochs (callbacks at each epoch's start and end). Its
  last epoch's model (the Trainer keeps no best epoch by default) predicts dev and test through
  the same task, so F1 is medtrain's exact-offset entity F1 (NER) or patient-level F1/AUROC at the threshold
  chosen on dev (screening).

Tokens are non-pad tokens of the training sequences, every epoch; tokens/s = tokens / training seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import json
import time
from typing import Any

from worker import MiB, children_rss_mb, proc_status_kb, versions, write_json


def _test_scores(test: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """{lang: {f1, precision, recall[, auroc]}} point values from a task's score_test report."""
    keep = ("f1", "precision", "recall", "auroc")
    return {lang: {k: (report[k] or {}).get("value") for k in keep if k in report} for lang, report in test.items()}


def _memory(torch: Any, rss_base_mb: float) -> dict[str, Any]:
    memory = {"rss_base_mb": round(rss_base_mb, 1), "rss_peak_mb": round(proc_status_kb("VmHWM") / 1024, 1),
              "loader_workers_rss_mb": children_rss_mb()}
    if torch.cuda.is_available():
        memory.update(cuda_max_allocated_mb=round(torch.cuda.max_memory_allocated() / MiB, 1),
                      cuda_max_reserved_mb=round(torch.cuda.max_memory_reserved() / MiB, 1))
    return memory


# ----------------------------------------------------------------------------- medtrain


def run_medtrain(rc: dict[str, Any], out: Path) -> dict[str, Any]:
    import torch

    from medtrain.config import load_config
    from medtrain.finetune import run as finetune_run
    from medtrain.finetune.config import FinetuneConfig

    torch.set_num_threads(rc["threads"])
    rss_base_mb = proc_status_kb("VmRSS") / 1024
    cfg = load_config(FinetuneConfig, rc["config_path"], rc.get("overrides") or [])
    if not isinstance(getattr(finetune_run, "TASKS", None), dict):
        raise SystemExit("medtrain.finetune.run.TASKS is gone: benchmarks/finetune_worker.py wraps the task it "
                         "names to time the dev evaluations; update run_medtrain")
    seen: dict[str, Any] = {"dev_s": [], "tokens": 0, "examples": 0}
    base = finetune_run.TASKS[cfg.task]

    class TimedTask(base):  # type: ignore[misc, valid-type]
        """The task the run builds, noting the training sequences and timing each dev evaluation."""

        def train_examples(self):
            examples = super().train_examples()
            seen.update(examples=len(examples), tokens=sum(len(ids) for ids, _ in examples))
            return examples

        def predict(self, predict, split):
            if split != "dev":
                return super().predict(predict, split)
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # steps still queued on the device are training time, not evaluation
            started = time.perf_counter()
            try:
                return super().predict(predict, split)
            finally:
                seen["dev_s"].append(time.perf_counter() - started)

        def score_dev(self, predictions):
            started = time.perf_counter()
            try:
                return super().score_dev(predictions)
            finally:
                seen["dev_s"][-1] += time.perf_counter() - started

    finetune_run.TASKS[cfg.task] = TimedTask
    started = time.perf_counter()
    finetune_run.finetune(cfg)
    wall = time.perf_counter() - started
    results = json.loads((cfg.output_dir / "results.json").read_text(encoding="utf-8"))
    epochs = cfg.train.epochs
    in_loop = seen["dev_s"][:epochs]  # write_results evaluates dev once more, after train_time_s
    train_s = results["train_time_s"] - sum(in_loop)
    return {
        "train_s": train_s, "dev_eval_s": sum(in_loop), "epochs": epochs, "examples": seen["examples"],
        "tokens_per_epoch": seen["tokens"], "best_epoch": results.get("best_epoch"),
        "test": _test_scores(results["test"]),
        "dev_f1": results["dev"].get("f1"), "run_s": wall, "memory": _memory(torch, rss_base_mb),
        "device": results.get("device"), "resolved": _resolved(cfg.output_dir),
    }


def _resolved(run_dir: Path) -> dict[str, Any] | None:
    """The train section medtrain resolved (config.yaml), so the row says which fast path ran."""
    import yaml

    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")).get("train")
    except (OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------- the Trainer


def run_trainer(rc: dict[str, Any], out: Path) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import (DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments, set_seed)

    from medtrain.config import load_config
    from medtrain.data.tokenizer import load_tokenizer
    from medtrain.finetune.config import FinetuneConfig
    from medtrain.finetune.run import TASKS

    datasets.disable_progress_bars()
    torch.set_num_threads(rc["threads"])
    rss_base_mb = proc_status_kb("VmRSS") / 1024
    cfg = load_config(FinetuneConfig, rc["config_path"])
    t = cfg.train
    cuda = torch.cuda.is_available()
    # The data: medtrain's readers and tokenization, so the Trainer trains on exactly medtrain's sequences.
    task = TASKS[cfg.task](cfg)
    tokenizer = load_tokenizer(cfg.model)
    task.encode(tokenizer, t.max_length, cfg.cache_dir, cfg.model)
    examples = task.train_examples()
    train = datasets.Dataset.from_dict({"input_ids": [list(ids) for ids, _ in examples],
                                        "attention_mask": [[1] * len(ids) for ids, _ in examples],
                                        "labels": [target for _, target in examples]})
    # The model and collator as the token-classification example builds them (sequence classification: the
    # text-classification example's), seeded first.
    set_seed(t.seed)
    labels = dict(enumerate(task.labels))
    model = task.model_class().from_pretrained(str(cfg.model), num_labels=len(labels), id2label=labels,
                                               label2id={v: k for k, v in labels.items()}, local_files_only=True)
    ner = cfg.task == "ner"
    collator = DataCollatorForTokenClassification(tokenizer) if ner else DataCollatorWithPadding(tokenizer)

    epochs: list[float] = []
    counted = {"real": 0, "padded": 0}

    class EpochClock(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            epochs.append(-time.perf_counter())

        def on_epoch_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            epochs[-1] += time.perf_counter()

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            counted["real"] += int(inputs["attention_mask"].sum())
            counted["padded"] += inputs["input_ids"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

    args = TrainingArguments(
        output_dir=str(cfg.output_dir / "trainer"), num_train_epochs=t.epochs, per_device_train_batch_size=t.batch_size,
        learning_rate=t.lr, seed=t.seed, use_cpu=not cuda, bf16=bool(rc.get("hf_bf16")),
        save_strategy="no", report_to=[], disable_tqdm=True)
    trainer = CountingTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                              processing_class=tokenizer, callbacks=[EpochClock()])
    started = time.perf_counter()
    trainer.train()

    def predict(sequences):
        """The task's Predict: logits per sequence, trimmed to its length, through trainer.predict."""
        if not len(sequences):
            return []
        data = datasets.Dataset.from_dict({"input_ids": [list(s) for s in sequences],
                                           "attention_mask": [[1] * len(s) for s in sequences]})
        logits = trainer.predict(data).predictions
        return [logits[i, :len(s)] if logits.ndim == 3 else logits[i] for i, s in enumerate(sequences)]

    dev_started = time.perf_counter()
    dev = task.score_dev(task.predict(predict, "dev"))
    dev_eval_s = time.perf_counter() - dev_started
    test = task.score_test(task.predict(predict, "test"), dev, cfg.eval)
    return {
        "train_s": sum(epochs), "epoch_times_s": [round(e, 3) for e in epochs], "dev_eval_s": dev_eval_s,
        "epochs": t.epochs, "examples": len(examples), "tokens_per_epoch": sum(len(ids) for ids, _ in examples),
        "tokens_counted": counted["real"],
        "padding_fraction": 1 - counted["real"] / counted["padded"] if counted["padded"] else None,
        "best_epoch": t.epochs, "test": _test_scores(test), "dev_f1": dev.get("f1"),
        "run_s": time.perf_counter() - started, "memory": _memory(torch, rss_base_mb),
        "device": str(trainer.args.device), "optim": str(args.optim), "bf16": args.bf16,
    }


# ----------------------------------------------------------------------------- main


def run(rc: dict[str, Any], out: Path) -> int:
    result = (run_medtrain if rc["system"] == "medtrain" else run_trainer)(rc, out)
    import torch

    train_s, tokens = result["train_s"], result["tokens_per_epoch"] * result["epochs"]
    result.update(status="ok", tokens=tokens, tokens_per_s=tokens / train_s if train_s > 0 else None,
                  epoch_s=train_s / result["epochs"], torch_threads=torch.get_num_threads(), env=versions())
    write_json(out, result)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sys.exit(run(json.loads(args.config.read_text(encoding="utf-8")), args.out))


if __name__ == "__main__":
    main()
