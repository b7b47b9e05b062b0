"""Save and resume: DeepSpeed engine state, every rank's own loader state and RNG, keep-last-k, export.

Layout of `OUTPUT_DIR/checkpoints/`:

    step-00000200/         DeepSpeed's files, plus per rank: rank-00000.json (loader state, step,
                           world size) and rank-00000.rng.pt (torch/numpy/python RNG states)
    latest                 the tag of the newest *complete* checkpoint, replaced atomically

DeepSpeed keeps `client_state` from one rank only, so each rank writes its own file. `latest` moves
only after every rank has finished writing; a run killed during a save resumes from the previous one,
and the half-written folder is deleted before the same tag is written again.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from medtrain.errors import UserError
from medtrain.io import write_json_atomic, write_text_atomic

LATEST = "latest"


def _barrier() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def _rank_file(folder: Path, rank: int, suffix: str) -> Path:
    return folder / f"rank-{rank:05d}{suffix}"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest_tag(ckpt_dir: Path) -> str | None:
    path = ckpt_dir / LATEST
    if not path.is_file():
        return None
    tag = path.read_text(encoding="utf-8").strip()
    if not (ckpt_dir / tag).is_dir():
        raise UserError(f"`latest` names {tag!r}, which is missing: restore it or delete `latest` to start over",
                        path)
    return tag


def save(engine: Any, ckpt_dir: Path, step: int, rank: int, world_size: int, rank_state: dict[str, Any],
         keep_last: int) -> Path:
    """Collective: every rank calls it. Writes the checkpoint for `step`, then moves `latest` to it."""
    tag = tag_for(step)
    folder = ckpt_dir / tag
    if rank == 0 and folder.exists() and latest_tag(ckpt_dir) != tag:
        shutil.rmtree(folder)  # left by a run killed while saving this same step
    _barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": step}, save_latest=False)
    write_json_atomic(_rank_file(folder, rank, ".json"),
                      {"step": step, "rank": rank, "world_size": world_size, **rank_state})
    torch.save(rng_state(), _rank_file(folder, rank, ".rng.pt"))
    _barrier()
    if rank == 0:
        write_text_atomic(ckpt_dir / LATEST, tag + "\n")
        _prune(ckpt_dir, keep_last, tag)
    _barrier()
    return folder


def _prune(ckpt_dir: Path, keep_last: int, current: str) -> None:
    """Delete all but the newest `keep_last` step folders (never the current one)."""
    tags = sorted(p.name for p in ckpt_dir.glob("step-*") if p.is_dir())
    for tag in tags[:-keep_last] if keep_last > 0 else []:
        if tag != current:
            shutil.rmtree(ckpt_dir / tag, ignore_errors=True)


def resume(engine: Any, ckpt_dir: Path, rank: int, world_size: int) -> dict[str, Any] | None:
    """Collective: load the latest complete checkpoint into `engine`; return this rank's state, or None."""
    tag = latest_tag(ckpt_dir)
    if tag is None:
        return None
    folder = ckpt_dir / tag
    state_file = _rank_file(folder, rank, ".json")
    if not state_file.is_file():
        raise UserError(f"checkpoint {tag} has no state for rank {rank}: it was written by fewer ranks; "
                        "resume with the same number of processes", folder)
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state["world_size"] != world_size:
        raise UserError(f"checkpoint {tag} was written by {state['world_size']} ranks, this run has {world_size}; "
                        "resume with the same number of processes", folder)
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if load_path is None:
        raise UserError(f"DeepSpeed could not load checkpoint {tag}", folder)
    set_rng_state(torch.load(_rank_file(folder, rank, ".rng.pt"), weights_only=False))
    return state

