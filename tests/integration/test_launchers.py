"""Real launches: mpirun, srun on the local SLURM cluster, and the deepspeed launcher each start 2 CPU ranks of
tests/integration/_allreduce.py, which must form one gloo group through medtrain.dist and all-reduce correctly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medtrain.dist import expand_nodelist

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_allreduce.py")
WORLD = 2
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


def run(command: list[str]) -> None:
    """Run a launcher in its own process group; a hang is killed (whole group) and fails the test."""
    with subprocess.Popen(command, cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True) as proc:
        try:
            output, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            output, _ = proc.communicate()
            pytest.fail(f"{command[0]} did not finish within {TIMEOUT_S}s:\n{output[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(command)} exited with {proc.returncode}:\n{output[-4000:]}"


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """TERM first, so srun and mpirun can stop their ranks; KILL what is left after 10 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def check_ranks(out_dir: Path, launcher: str) -> None:
    results = [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    expected_sum = [sum(r + 1.0 for r in range(WORLD)), sum(10.0**r for r in range(WORLD))]
    for rank, result in enumerate(results):
        assert (result["rank"], result["world_size"], result["launcher"]) == (rank, WORLD, launcher)
        assert (result["local_rank"], result["local_world_size"]) == (rank, WORLD)  # one node
        assert (result["group_rank"], result["group_size"], result["backend"]) == (rank, WORLD, "gloo")
        assert result["sum"] == expected_sum
    assert len({(r["master_addr"], r["master_port"]) for r in results}) == 1


def test_mpirun(mpirun: list[str], tmp_path: Path) -> None:
    run([*mpirun, "-np", str(WORLD), sys.executable, str(WORKER), str(tmp_path)])
    check_ranks(tmp_path, "mpi")


def test_srun(slurm_cluster, tmp_path: Path) -> None:
    run([
        "srun", "--ntasks", str(WORLD), "--partition", slurm_cluster.partition, "--time", "10",
        "--kill-on-bad-exit=1", "--job-name", "medtrain-test-srun",
        sys.executable, str(WORKER), str(tmp_path),
    ])
    check_ranks(tmp_path, "slurm")


def test_deepspeed_launcher(tmp_path: Path) -> None:
    deepspeed = Path(sys.executable).with_name("deepspeed")
    if not deepspeed.exists():
        pytest.fail(f"{deepspeed} not found: DeepSpeed is a dependency of medtrain")
    run([str(deepspeed), "--num_gpus", str(WORLD), "--master_port", str(_free_port()), str(WORKER), str(tmp_path)])
    check_ranks(tmp_path, "deepspeed")


def _free_port() -> int:
    """The deepspeed launcher's default 29500 would clash with a concurrent test session."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("nodelist", ["node[01-03,07]", "a1,b2", "gpu-[1-2]", "n[098-101]", "r[1-2]n[01-02]"])
def test_nodelist_expansion_matches_scontrol(slurm_cluster, nodelist: str) -> None:
    shown = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                           timeout=30, check=True)
    assert expand_nodelist(nodelist) == shown.stdout.split()
