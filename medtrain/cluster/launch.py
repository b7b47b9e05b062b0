"""Command lines that start pretraining ranks on this machine (the study's local executor, the benchmarks,
the tests): one place for `deepspeed --num_gpus N`, so every caller picks a free rendezvous port."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from medtrain.io import free_port


def deepspeed_launcher() -> Path:
    """The `deepspeed` launcher beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("deepspeed")
    return beside if beside.is_file() else Path(shutil.which("deepspeed") or "deepspeed")


def rank_command(script: str | Path, args: Sequence[str], ranks: int) -> list[str]:
    """`python SCRIPT ARGS` for one rank; `deepspeed --num_gpus N --master_port P SCRIPT ARGS` for several.

    The port is chosen free now: the launcher's fixed default (29500) clashes with a concurrent run.
    """
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    if ranks == 1:
        return [sys.executable, str(script), *map(str, args)]
    return [str(deepspeed_launcher()), "--num_gpus", str(ranks), "--master_port", str(free_port()), str(script),
            *map(str, args)]
