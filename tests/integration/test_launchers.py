"""Real launches: mpirun, srun on the local SLURM cluster, and the deepspeed launcher each start 2 CPU ranks of
tests/integration/_allreduce.py, which must form one gloo group through medtrain.dist and all-reduce correctly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _launch import deepspeed_command, run

from medtrain.dist import expand_nodelist

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("_allreduce.py")
WORLD = 2


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
    run(deepspeed_command(WORKER, [str(tmp_path)], WORLD))
    check_ranks(tmp_path, "deepspeed")


@pytest.mark.parametrize("nodelist", ["node[01-03,07]", "a1,b2", "gpu-[1-2]", "n[098-101]", "r[1-2]n[01-02]"])
def test_nodelist_expansion_matches_scontrol(slurm_cluster, nodelist: str) -> None:
    shown = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                           timeout=30, check=True)
    assert expand_nodelist(nodelist) == shown.stdout.split()
