"""What a run reports: TensorBoard scalars, `history.jsonl` and a progress bar, on rank 0 only.

Names follow the Hugging Face Trainer's, so TensorBoard views and scripts users already have keep working:
`monitor.log(step, "train", {"loss": ..., "learning_rate": ...})` writes the scalars `train/loss` and
`train/learning_rate`, and the history line `{"step": step, "train/loss": ..., "train/learning_rate": ...}`.

On resume from step N, history lines after N and TensorBoard events after N (written before the kill
but not covered by the checkpoint) are dropped, so a resumed run's record equals an uninterrupted one.
Only numbers are logged: never text from the corpora.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medtrain.io import write_text_atomic

HISTORY = "history.jsonl"
MiB = 1 << 20
BAR_FIELDS = ("loss", "learning_rate", "tokens_per_second")  # the few numbers worth a glance in the bar


def memory_mb(cuda: bool) -> float:
    """`train/memory_mb`: the most CUDA memory this rank's GPU held so far, or on CPU the process's RSS now."""
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / MiB
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB


def truncate_history(path: Path, last_step: int) -> None:
    """Keep the records of steps <= last_step (and drop a half-written last line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= last_step:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


class Monitor:
    """Rank 0 writes; other ranks get a Monitor that does nothing, so callers need no rank checks."""

    def __init__(self, run_dir: Path, rank: int, start_step: int, total_steps: int, progress: bool = True,
                 events_dir: Path | None = None):
        """events_dir: where the TensorBoard events go; default run_dir/tensorboard."""
        self.enabled = rank == 0
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.history_path = run_dir / HISTORY
        truncate_history(self.history_path, start_step)
        self._history = self.history_path.open("a", encoding="utf-8")
        # purge_step hides events from steps after the checkpoint that a killed run had already logged.
        self.writer = SummaryWriter(log_dir=str(events_dir or run_dir / "tensorboard"),
                                    purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not progress)

    def log(self, step: int, prefix: str, metrics: dict[str, float]) -> None:
        """One record: TensorBoard scalars `prefix/name`, a history line with the same names, the bar's postfix."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"step": step}
        for name, value in metrics.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
            record[f"{prefix}/{name}"] = value
        self._history.write(json.dumps(record) + "\n")
        self._history.flush()
        if prefix == "train":
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in BAR_FIELDS}, refresh=True)

    def text(self, tag: str, text: str) -> None:
        """A run-level note in TensorBoard (e.g. the resolved config), never corpus text."""
        if self.enabled:
            self.writer.add_text(tag, text)

    def close(self) -> None:
        if self.enabled:
            self.writer.flush()
            self.writer.close()
            self._history.close()
            self.bar.close()
