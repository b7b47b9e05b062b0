"""What a run reports: TensorBoard scalars, `history.jsonl` and a progress bar, on rank 0 only.

On resume from step N, history lines after N and TensorBoard events after N (written before the kill
but not covered by the checkpoint) are dropped, so a resumed run's record equals an uninterrupted one.
Only numbers are logged: never text from the corpora.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medtrain.io import write_text_atomic

HISTORY = "history.jsonl"


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

    def __init__(self, run_dir: Path, rank: int, start_step: int, total_steps: int, progress: bool = True):
        self.enabled = rank == 0
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.history_path = run_dir / HISTORY
        truncate_history(self.history_path, start_step)
        self._history = self.history_path.open("a", encoding="utf-8")
        # purge_step hides events from steps after the checkpoint that a killed run had already logged.
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not progress)

    def log(self, step: int, kind: str, metrics: dict[str, float]) -> None:
        """One record: TensorBoard scalars `kind/name`, a history line, and the progress bar's postfix."""
        if not self.enabled:
            return
        for name, value in metrics.items():
            self.writer.add_scalar(f"{kind}/{name}", value, step)
        record: dict[str, Any] = {"step": step, "kind": kind, **metrics}
        self._history.write(json.dumps(record) + "\n")
        self._history.flush()
        if kind == "train":
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "lr", "tokens_per_s")},
                                 refresh=True)

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
