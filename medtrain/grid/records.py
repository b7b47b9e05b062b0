"""GRID_DIR/jobs.json: which job ran (or runs) each signature, so status, resubmission and cancel agree.

    {"version": 1, "runs": {"<signature>": {"executor": "slurm", "job_id": "1234_5", "submitted": "...",
                                            "earlier": ["1200_3"]}}}

Local runs record {"executor": "local", "pid": <the submitting process>, "reason": "..." once failed}.
Written atomically, under GRID_DIR/.submit.lock, by `medtrain grid submit` only; jobs never write it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medtrain.errors import UserError
from medtrain.io import write_json_atomic

JOBS = "jobs.json"
VERSION = 1


def load_jobs(grid_dir: Path) -> dict[str, dict[str, Any]]:
    """{signature: record}; empty before the first submission."""
    path = grid_dir / JOBS
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != VERSION:
        raise UserError(f"jobs.json version {data.get('version')} is not {VERSION}", path)
    return data["runs"]


def save_jobs(grid_dir: Path, runs: dict[str, dict[str, Any]]) -> None:
    write_json_atomic(grid_dir / JOBS, {"version": VERSION, "runs": runs})


def new_record(previous: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """A record for a fresh submission; the earlier SLURM job ids of the run are kept, oldest first."""
    earlier = list(previous.get("earlier", [])) if previous else []
    if previous and previous.get("job_id"):
        earlier.append(previous["job_id"])
    return {**fields, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"), "earlier": earlier}


@contextlib.contextmanager
def submit_lock(grid_dir: Path) -> Iterator[None]:
    """One submission per grid at a time: two at once would both see a run as missing and launch it twice."""
    grid_dir.mkdir(parents=True, exist_ok=True)
    with open(grid_dir / ".submit.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError("another `medtrain grid submit` of this grid is running", grid_dir) from None
        yield
