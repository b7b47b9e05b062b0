"""The baseline: Hugging Face Trainer + BertForMaskedLM + DataCollatorForLanguageModeling, one configuration.

    python benchmarks/baseline_hf.py --config RUN.json --out RESULT.json      (started by benchmarks/run.py)

What users run today, after the idea of transformers' run_mlm example, in its two data forms:

* hf-padded (line by line): every non-empty line of the corpora is one example, truncated to seq_len; the collator
  pads each batch to its longest example (`hf_padding: longest`, run_mlm's default) or every example is padded
  to seq_len beforehand (`hf_padding: max_length`, run_mlm's --pad_to_max_length).
* hf-grouped: documents are tokenized with their special tokens, concatenated, and cut into seq_len blocks
  (run_mlm's group_texts); no padding.

Same model shape (a full-vocabulary head over every position: that is BertForMaskedLM), same corpora and
tokenizer, micro-batch, precision, activation checkpointing, optimizer (AdamW, weight decay 0.01, clipping 1.0;
the Trainer's default implementation, fused with torch >= 2.8, as medtrain's), threads and DataLoader workers
as the medtrain configuration. Tokenizing happens before the clock starts.
Throughput counts real tokens (padding excluded; `padded_tokens_per_s` counts it), so the two systems are
compared on the text they learn from. Model FLOPs count the head over every row, padding included, as it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import json
import os
import tempfile
import time
from itertools import chain
from typing import Any

from worker import (MiB, OOM_EXIT, RssWatchdog, StepProfile, children_rss_mb, cpu_threads, peak_rate,
                    proc_status_kb, rank_file, throughput, versions, write_json)


def read_texts(corpora: list[str]) -> list[str]:
    texts = []
    for path in corpora:
        with open(path, encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    return texts


def build_dataset(cfg: dict[str, Any], tokenizer):
    """The training examples of this form, tokenized (before the clock)."""
    import datasets

    datasets.disable_progress_bars()
    seq_len = cfg["seq_len"]
    texts = read_texts(cfg["corpora"])
    if cfg["system"] == "hf-padded":
        lines = [line for text in texts for line in text.splitlines() if line and not line.isspace()]
        raw = datasets.Dataset.from_dict({"text": lines})
        padding = "max_length" if cfg["hf_padding"] == "max_length" else False

        def tokenize_lines(batch: dict) -> dict:
            return tokenizer(batch["text"], truncation=True, max_length=seq_len, padding=padding,
                             return_special_tokens_mask=True)

        return raw.map(tokenize_lines, batched=True, remove_columns=["text"])
    raw = datasets.Dataset.from_dict({"text": texts})

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["text"], return_special_tokens_mask=True)

    def group(batch: dict) -> dict:
        joined = {key: list(chain.from_iterable(batch[key])) for key in batch}
        usable = len(joined["input_ids"]) // seq_len * seq_len
        return {key: [values[i:i + seq_len] for i in range(0, usable, seq_len)] for key, values in joined.items()}

    tokenized = raw.map(tokenize, batched=True, remove_columns=["text"])
    return tokenized.map(group, batched=True)


class TimedLoader:
    """The Trainer's DataLoader, with the time spent waiting in `next()` added up."""

    def __init__(self, loader, clock: dict[str, float]):
        self._loader, self._clock = loader, clock

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __iter__(self):
        iterator = iter(self._loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self._clock["wait"] += time.perf_counter() - started
            yield batch


def run(cfg: dict[str, Any], out: Path) -> int:
    import torch
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    from flops import FORMULA, BertShape, train_step_flops
    from medtrain.data.tokenizer import load_tokenizer

    started = time.perf_counter()
    torch.set_num_threads(cpu_threads(cfg, 1))
    phase = {"phase": "data"}

    def oom(kind: str, detail: str) -> None:
        write_json(rank_file(out, 0), {"status": "oom", "oom_kind": kind, "detail": detail, "phase": phase["phase"],
                                       "rank": 0})
        sys.stderr.write(f"out of memory ({kind}: {detail}) during {phase['phase']}\n")
        os._exit(OOM_EXIT)

    watchdog = None
    if cfg.get("rss_limit_mb"):
        watchdog = RssWatchdog(cfg["rss_limit_mb"],
                               lambda rss: oom("rss_limit", f"RSS {rss:.1f} MiB > {cfg['rss_limit_mb']} MiB"))
    cuda = torch.cuda.is_available()
    rss_base_mb = proc_status_kb("VmRSS") / 1024
    tokenizer = load_tokenizer(cfg["tokenizer"])
    dataset = build_dataset(cfg, tokenizer)
    pad_id = tokenizer.pad_token_id
    vocab = max(int(cfg["vocab_size"]), len(tokenizer))
    torch.manual_seed(cfg["seed"])
    phase["phase"] = "model"
    model = BertForMaskedLM(BertConfig(**cfg["model_config"], vocab_size=vocab, pad_token_id=pad_id,
                                       attn_implementation=cfg["attention"]))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    steps = cfg["warmup_steps"] + cfg["measure_steps"]
    clock = {"wait": 0.0}
    step_ends: list[float] = []
    waits: list[float] = []
    counts: list[dict[str, int]] = []
    current = {"real": 0, "padded": 0, "rows": 0, "sequences": 0, "masked": 0}

    class Timed(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())
            profile.step()
            waits.append(clock["wait"])
            clock["wait"] = 0.0
            counts.append(dict(current))
            current.update(real=0, padded=0, rows=0, sequences=0, masked=0)

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            current["padded"] += ids.numel()
            current["real"] += int(mask.sum()) if mask is not None else ids.numel()
            current["sequences"] += ids.shape[0]
            current["masked"] += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

        def get_train_dataloader(self):
            return TimedLoader(super().get_train_dataloader(), clock)

    work = tempfile.mkdtemp(prefix="hf-baseline-")
    args = TrainingArguments(
        output_dir=work, max_steps=steps, per_device_train_batch_size=cfg["micro_batch"],
        gradient_accumulation_steps=cfg["grad_accum"], learning_rate=cfg["lr"], weight_decay=0.01,
        adam_epsilon=1e-6, max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[],
        use_cpu=not cuda, bf16=cfg["precision"] == "bf16", fp16=cfg["precision"] == "fp16",
        gradient_checkpointing=cfg["activation_checkpointing"], dataloader_num_workers=cfg["num_workers"],
        dataloader_drop_last=True, disable_tqdm=True, seed=cfg["seed"], remove_unused_columns=False)
    trainer = CountingTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                              callbacks=[Timed()])
    profile = StepProfile(cfg)
    setup_s = time.perf_counter() - started
    phase["phase"] = "steps"
    try:
        with profile:
            trainer.train()
    except torch.OutOfMemoryError as exc:
        oom("cuda", str(exc).splitlines()[0])
    if watchdog is not None:
        watchdog.stop()
        if proc_status_kb("VmHWM") / 1024 > cfg["rss_limit_mb"]:
            oom("rss_limit", f"peak RSS {proc_status_kb('VmHWM') / 1024:.0f} MiB")

    times = [b - a for a, b in zip(step_ends, step_ends[1:])]
    warm = cfg["warmup_steps"]
    measured, measured_counts, measured_waits = times[warm:], counts[warm:], waits[warm:]
    shape = BertShape.from_config(cfg["model_config"], vocab)
    flops = [train_step_flops(shape, c["sequences"], c["padded"] // max(1, c["sequences"]), c["padded"],
                              cfg["activation_checkpointing"]) for c in measured_counts]
    model_flops = sum(f["model_flops"] for f in flops)
    hw_flops = sum(f["hardware_flops"] for f in flops)
    total_time = sum(measured)
    real = sum(c["real"] for c in measured_counts)
    padded = sum(c["padded"] for c in measured_counts)
    memory = {"rss_base_mb": round(rss_base_mb, 1), "rss_peak_mb": round(proc_status_kb("VmHWM") / 1024, 1),
              "rss_end_mb": round(proc_status_kb("VmRSS") / 1024, 1), "loader_workers_rss_mb": children_rss_mb()}
    if cuda:
        memory.update(cuda_max_allocated_mb=round(torch.cuda.max_memory_allocated() / MiB, 1),
                      cuda_max_reserved_mb=round(torch.cuda.max_memory_reserved() / MiB, 1))
    peak = peak_rate(torch)
    result: dict[str, Any] = {
        "status": "ok",
        **throughput(measured, [c["real"] for c in measured_counts], [c["sequences"] for c in measured_counts]),
        "padded_tokens_per_s_overall": padded / total_time if total_time else None,
        "padding_fraction": 1 - real / padded if padded else None,
        "examples": len(dataset),
        "first_step_s": times[0] if times else None,
        "setup_s": setup_s,
        "data_wait_fraction": sum(measured_waits) / total_time if total_time else None,
        "masked_fraction": sum(c["masked"] for c in measured_counts) / real if real else None,
        "memory": {"per_rank": [memory], "estimate": None},
        "optim": str(args.optim),
        "flops": {"formula": FORMULA, "head_rows": "all (padding included)",
                  "model_flops_per_step": model_flops / max(1, len(measured)),
                  "hardware_flops_per_step": hw_flops / max(1, len(measured)),
                  "achieved_flops_per_s": model_flops / total_time if total_time else None, **peak},
        "world_size": 1, "torch_threads": [torch.get_num_threads()],
        "env": versions(),
    }
    if peak["peak_flops"] and total_time:
        result["flops"]["mfu"] = model_flops / total_time / peak["peak_flops"]
        result["flops"]["hfu"] = hw_flops / total_time / peak["peak_flops"]
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
