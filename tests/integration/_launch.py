"""Running real launchers (deepspeed, mpirun, srun) from tests: a clean environment, a process group of their
own, and a hang killed rather than blocking the suite."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medtrain.cluster.launch import rank_command

REPO = Path(__file__).resolve().parents[2]
DEEPSPEED = Path(sys.executable).with_name("deepspeed")
# Generous: the first DeepSpeed process group on a machine JIT-builds its shared-memory op (cached after).
TIMEOUT_S = 300
# Variables a launcher sets for its ranks; inherited stale ones (say, from an in-process test) would win.
RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launch_env() -> dict[str, str]:
    """This process's environment without rank/job variables, with DeepSpeed on CPU and one thread per rank."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in RANK_VARS and not k.startswith(("OMPI_", "PMI_", "PMIX_")) and not _slurm_job_var(k)
    }
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    return env


def _slurm_job_var(name: str) -> bool:
    return name.startswith("SLURM_") and name != "SLURM_CONF"


def start(command: list[str]) -> subprocess.Popen[str]:
    """Start a launcher in its own process group (so the whole job can be killed), output captured."""
    return subprocess.Popen(command, cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def run(command: list[str], expect_rc: int = 0) -> str:
    """Run a launcher to the end; a hang is killed (whole group) and fails the test. Returns its output."""
    with start(command) as proc:
        try:
            output, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            output, _ = proc.communicate()
            pytest.fail(f"{command[0]} did not finish within {TIMEOUT_S}s:\n{output[-4000:]}")
    assert proc.returncode == expect_rc, f"{' '.join(command)} exited with {proc.returncode}:\n{output[-4000:]}"
    return output


def kill_group(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> None:
    """`sig` to the whole group (TERM lets srun and mpirun stop their ranks); KILL what is left after 10 s."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def deepspeed_command(script: str | Path, args: list[str], world: int) -> list[str]:
    """`deepspeed --num_gpus WORLD --master_port <free> SCRIPT ARGS`, as medtrain's own callers build it."""
    if not DEEPSPEED.exists():
        pytest.fail(f"{DEEPSPEED} not found: DeepSpeed is a dependency of medtrain")
    return rank_command(script, args, world)


def job_info(job_id: str) -> dict[str, str]:
    """`scontrol show job -o`: JobState, Reason, Restarts, Dependency, ... (kept for MinJobAge after the job
    ends). For an array, the fields of its tasks' lines, the last task's winning where they differ."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60,
                           check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", shown))
