"""A fine-tuning run's checkpoint: last.pt after every epoch, best-eNNN.pt for the best epoch's weights.

A killed run resumes after its last finished epoch: weights, optimizer, schedule and RNG come from last.pt,
and the data order is a function of (seed, epoch), so the resumed run equals an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from medtrain.checkpoint import rng_state, set_rng_state
from medtrain.config import config_to_dict
from medtrain.errors import UserError
from medtrain.finetune.config import CHECKPOINT, FinetuneConfig
from medtrain.io import atomic_open

VERSION = 1


def new_state() -> dict[str, Any]:
    """The state of a run that has not finished an epoch yet."""
    return {"version": VERSION, "epoch": 0, "step": 0, "train_time_s": 0.0, "best": {"epoch": 0, "f1": -1.0}}


def best_file(folder: Path, epoch: int) -> Path:
    return folder / f"best-e{epoch:03d}.pt"


def save_checkpoint(folder: Path, state: dict[str, Any], model: Any, optimizer: Any, schedule: Any,
                    improved: bool) -> None:
    """best-eNNN.pt first (only when the best epoch changed), then last.pt, whose best epoch names it; older
    bests are removed last. A kill between any two writes leaves a last.pt whose files all exist."""
    best = best_file(folder, state["best"]["epoch"])
    if improved:
        with atomic_open(best, "wb") as f:
            torch.save(model.state_dict(), f)
    with atomic_open(folder / "last.pt", "wb") as f:
        torch.save({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "rng": rng_state()}, f)
    for stale in folder.glob("best-e*.pt"):
        if stale != best:
            stale.unlink()


def load_checkpoint(folder: Path, model: Any, optimizer: Any, schedule: Any) -> dict[str, Any] | None:
    """Restore model, optimizer, schedule and RNG from last.pt; its state (epoch, step, best, timing)."""
    path = folder / "last.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != VERSION:
        raise UserError(f"checkpoint version {state.get('version')} is not {VERSION}: delete the "
                        "checkpoint folder to start over", folder)
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    schedule.load_state_dict(state.pop("schedule"))
    set_rng_state(state.pop("rng"))
    return state


def load_best(folder: Path, model: Any, state: dict[str, Any], device: torch.device) -> None:
    """The best epoch's weights into `model`, for the final evaluation."""
    model.load_state_dict(torch.load(best_file(folder, state["best"]["epoch"]), map_location=device,
                                     weights_only=True))


def check_same_config(cfg: FinetuneConfig) -> None:
    """An unfinished run resumes only under the config it started with (the progress bar aside)."""
    saved_path = cfg.output_dir / "config.yaml"
    if not (cfg.output_dir / CHECKPOINT / "last.pt").is_file() or not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    current = config_to_dict(cfg)
    if {k: v for k, v in saved.items() if k != "progress"} != {k: v for k, v in current.items() if k != "progress"}:
        raise UserError("this output_dir holds an unfinished run with a different config.yaml: use another "
                        "output_dir, or delete this one to start over", cfg.output_dir)
