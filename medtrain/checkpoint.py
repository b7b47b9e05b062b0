"""Save and resume: DeepSpeed engine state, every rank's own loader state and RNG, keep-last-k, and the audit of
the sequences each step trained on.

Layout of `OUTPUT_DIR/checkpoints/`:

    step-00000200/         DeepSpeed's files, plus per rank: rank-00000.json (loader state, step, world size,
                           accumulation) and rank-00000.rng.pt (torch/numpy/python RNG states)
    latest                 the tag of the newest *complete* checkpoint, replaced atomically
    universal/step-.../    that checkpoint converted for another world size (see `convert`), until the
                           resized run saves its own

DeepSpeed keeps `client_state` from one rank only, so each rank writes its own file. `latest` moves
only after every rank has finished writing; a run killed during a save resumes from the previous one,
and the half-written folder is deleted before the same tag is written again.

A run may resume on another number of ranks (a requeued job given another allocation) if it keeps the global
batch (micro-batch x accumulation x ranks): the engine state goes through DeepSpeed's universal checkpoint where
the optimizer state is cut per rank, the data stream re-partitions from its global position (data/stream.py),
and the schedule and step counter carry on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as torch_dist

from medtrain.errors import UserError
from medtrain.io import replace_dir_atomic, write_json_atomic, write_text_atomic

LATEST = "latest"
UNIVERSAL = "universal"


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


def seed_rng(seed: int, step: int, rank: int) -> None:
    """Seed torch (CUDA included), numpy and python from (seed, step, rank): a resized run's RNG, as the saved
    per-rank states belong to another set of ranks."""
    key = np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint32)
    torch.manual_seed(int(key[0]) << 32 | int(key[1]))
    np.random.seed(int(key[0]))
    random.seed(int(key[1]))


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
    """Collective: every rank calls it. Writes the checkpoint for `step`, then moves `latest` to it.

    `rank_state` holds "loader" (the stream's state_dict) and "grad_accum"; both are read back on a resize."""
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
        shutil.rmtree(ckpt_dir / UNIVERSAL, ignore_errors=True)  # a conversion this run no longer resumes from
    _barrier()
    return folder


def _prune(ckpt_dir: Path, keep_last: int, current: str) -> None:
    """Delete all but the newest `keep_last` step folders (never the current one)."""
    tags = sorted(p.name for p in ckpt_dir.glob("step-*") if p.is_dir())
    for tag in tags[:-keep_last] if keep_last > 0 else []:
        if tag != current:
            shutil.rmtree(ckpt_dir / tag, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Saved:
    """The latest complete checkpoint, as read before the engine is built (a resize changes how it is built)."""

    ckpt_dir: Path
    tag: str
    step: int
    world_size: int
    micro_batch: int
    grad_accum: int
    loader: dict[str, Any]
    """Rank 0's loader state: at a step boundary every rank has read as many batches, so any rank's state
    gives the global stream position."""

    @property
    def folder(self) -> Path:
        return self.ckpt_dir / self.tag

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    def resized(self, world_size: int) -> bool:
        return world_size != self.world_size


def latest(ckpt_dir: Path) -> Saved | None:
    """The latest complete checkpoint under `ckpt_dir`, or None to start from scratch."""
    tag = latest_tag(ckpt_dir)
    if tag is None:
        return None
    state_file = _rank_file(ckpt_dir / tag, 0, ".json")
    if not state_file.is_file():
        raise UserError(f"checkpoint {tag} has no state for rank 0; restore it or delete `latest` to start over",
                        ckpt_dir / tag)
    state = json.loads(state_file.read_text(encoding="utf-8"))
    loader, step = state["loader"], int(state["step"])
    # written before accumulation was saved: batches per rank per step (those checkpoints were never resized)
    grad_accum = state.get("grad_accum") or loader["batches"] // max(1, step)
    return Saved(ckpt_dir, tag, step, int(state["world_size"]), int(loader["micro_batch"]), int(grad_accum),
                 loader)


def check_global_batch(saved: Saved, micro_batch: int, grad_accum: int, world_size: int) -> None:
    """A resume keeps the global batch, or the data and schedule would not continue the same run; the error
    names the settings that would keep it on this many ranks."""
    total, now = saved.global_batch, micro_batch * grad_accum * world_size
    if now == total:
        return
    ranks = f"{world_size} rank" + ("s" if world_size > 1 else "")
    options = []
    if total % (grad_accum * world_size) == 0:
        options.append(f"data.micro_batch_size={total // (grad_accum * world_size)}")
    if total % (micro_batch * world_size) == 0:
        options.append(f"train.grad_accum={total // (micro_batch * world_size)}")
    if not options and total % world_size == 0:
        options.append(f"data.micro_batch_size={total // world_size} train.grad_accum=1")
    fix = (f"with {ranks} use " + " or ".join(options) if options
           else f"no micro-batch and accumulation give it on {ranks}: use a number of ranks that divides {total}")
    raise UserError(f"checkpoint {saved.tag} was written with global batch {total} = {saved.micro_batch} x "
                    f"{saved.grad_accum} x {saved.world_size} (data.micro_batch_size x train.grad_accum x ranks), "
                    f"this run has {micro_batch} x {grad_accum} x {world_size} = {now}; {fix}", saved.folder)


def convert(saved: Saved, rank: int, to_universal: Callable[[Path, Path], None]) -> float:
    """Collective: rank 0 converts the checkpoint for another world size (engine.to_universal) into
    `universal/<tag>`, swapped in whole, while the others wait. Returns the conversion's seconds (rank 0)."""
    seconds = 0.0
    if rank == 0:
        started = time.perf_counter()
        replace_dir_atomic(saved.ckpt_dir / UNIVERSAL / saved.tag, lambda tmp: to_universal(saved.folder, tmp))
        seconds = time.perf_counter() - started
    _barrier()
    return seconds


def resume(engine: Any, saved: Saved, rank: int, world_size: int, seed: int, universal: bool) -> dict[str, Any]:
    """Collective: load `saved` into `engine` and return this rank's state ("step", "loader").

    On the same number of ranks each rank takes back its own loader state and RNG. On another number, every
    rank gets rank 0's loader state (the stream re-partitions from its global position) and re-seeds its RNG from
    (seed, step, rank): deterministic, though not the uninterrupted run's dropout. `universal`: the engine was
    built to load `convert`'s output.
    """
    folder, resized = saved.folder, saved.resized(world_size)
    state_file = _rank_file(folder, 0 if resized else rank, ".json")
    if not state_file.is_file():
        raise UserError(f"checkpoint {saved.tag} has no state for rank {rank}; restore it or delete `latest` to "
                        "start over", folder)
    state = json.loads(state_file.read_text(encoding="utf-8"))
    load_dir = saved.ckpt_dir / UNIVERSAL if universal else saved.ckpt_dir
    load_path, _ = engine.load_checkpoint(str(load_dir), tag=saved.tag)
    if load_path is None:
        raise UserError(f"DeepSpeed could not load checkpoint {saved.tag}", folder)
    if resized:
        seed_rng(seed, saved.step, rank)
    else:
        set_rng_state(torch.load(_rank_file(folder, rank, ".rng.pt"), weights_only=False))
    return state


def audit_path(output_dir: Path, rank: int) -> Path:
    return output_dir / "audit" / f"rank-{rank}.jsonl"


def trim_audit(path: Path, step: int) -> None:
    """Drop the lines of steps after `step` (and a line a kill cut short), atomically: a resumed run redoes those
    steps, and the file must describe the run that produced the weights."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # the tail of a line being written when the run was killed
    write_text_atomic(path, "".join(kept))


class AuditLog:
    """`OUTPUT_DIR/audit/rank-R.jsonl`: one line per optimizer step, {"step": S, "ids": [...]}, the global ids
    (data/stream.py) of the sequences rank R trained on in step S. A resumed run trims, then appends."""

    def __init__(self, output_dir: Path, rank: int, world_size: int, step: int):
        """Trim this rank's file to `step`; rank 0 also trims files of ranks this run no longer has."""
        own = audit_path(output_dir, rank)
        others: Iterable[Path] = ()
        if rank == 0:
            others = (p for p in own.parent.glob("rank-*.jsonl") if int(p.stem.removeprefix("rank-")) >= world_size)
        for path in (own, *others):
            trim_audit(path, step)
        own.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = own.open("a", encoding="utf-8")

    def write(self, step: int, ids: list[int]) -> None:
        self._file.write(json.dumps({"step": step, "ids": ids}) + "\n")
        self._file.flush()  # a killed process loses nothing it wrote

    def sync(self) -> None:
        """Make the lines durable before a checkpoint that counts on them."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
