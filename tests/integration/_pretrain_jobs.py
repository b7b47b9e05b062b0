"""Pretraining runs for the tests that start them: a tiny config, submitting it to a local SLURM cluster (one
host or two) through either front end, the steps a run logged, polling a job with scontrol (no sacct on the
test clusters), and comparing two runs' exported weights."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from _launch import REPO, job_info, run

LAUNCHER = REPO / "launchers" / "pretrain.py"
SBATCH = REPO / "slurm" / "pretrain.sbatch"
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 128}
WAIT_S = 300  # per wait: start-up, training, and a requeue; a hang fails the test instead of blocking the suite
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}
SIGUSR2 = 12
REQUEUE_HOLD_S = 3


def write_config(tmp_path: Path, shards: Path, max_steps: int, save_every: int, num_workers: int = 1) -> Path:
    config = {
        "output_dir": str(tmp_path / "unused"),
        "data": {"shards": str(shards), "micro_batch_size": 4, "num_workers": num_workers},
        "model": {"config": TINY},
        "deepspeed": str(REPO / "ds_configs" / "zero2.json"),
        "train": {"max_steps": max_steps, "lr": 1e-3, "warmup_steps": 3, "seed": 3, "save_every": save_every,
                  "keep_last": 2, "eval_every": 0},
        "progress": False,
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_steps(run_dir: Path) -> list[int]:
    """Steps in history.jsonl; while the run writes, its last line may be incomplete, so it is left out."""
    path = run_dir / "history.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.is_file() else []
    return [r["step"] for r in map(json.loads, lines) if "train/loss" in r]


def slurm(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


def wait_for(job_id: str, done: Callable[[dict[str, str]], bool], what: str) -> dict[str, str]:
    """Poll until `done(job_info)`. SLURM holds a requeued job for its credential lifetime (120 s); the test
    starts it after REQUEUE_HOLD_S instead (at once, slurmd would still refuse the revoked credential)."""
    deadline = time.monotonic() + WAIT_S
    held_since = None
    while time.monotonic() < deadline:
        info = job_info(job_id)
        if done(info):
            return info
        held = info["JobState"] == "PENDING" and info.get("Reason") == "BeginTime"
        held_since = (held_since or time.monotonic()) if held else None
        if held and time.monotonic() - held_since >= REQUEUE_HOLD_S:
            slurm("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        time.sleep(0.5)
    pytest.fail(f"job {job_id}: did not {what} within {WAIT_S}s (state {info['JobState']}, reason {info['Reason']})")


def wait_until_ended(job_id: str) -> dict[str, str]:
    return wait_for(job_id, lambda info: info["JobState"] in ENDED, "end")


def wait_for_steps(job_id: str, run_dir: Path, steps: int) -> None:
    """Until the run has logged `steps` steps; fails at once if the job ends first."""
    def trained(info: dict[str, str]) -> bool:
        assert info["JobState"] not in ENDED, f"job {job_id} ended ({info['JobState']}) before step {steps}"
        return len(train_steps(run_dir)) >= steps

    wait_for(job_id, trained, f"reach step {steps}")


def submit_with_launcher(config: Path, out: Path, partition: str, *overrides: str, nodes: int = 1,
                         tasks_per_node: int = 2) -> tuple[str, str]:
    """launchers/pretrain.py with CPU ranks, one core each: the job id and the launcher's output."""
    output = run([sys.executable, str(LAUNCHER), str(config), f"output_dir={out}", *overrides, "--nodes", str(nodes),
                  "--tasks-per-node", str(tasks_per_node), "--cpus-per-task", "1", "--partition", partition,
                  "--time", "10"])
    match = re.search(r"submitted job (\d+)", output)
    assert match, output
    return match[1], output


def submit_with_sbatch(config: Path, out: Path, partition: str, log: Path, *overrides: str, nodes: int = 1,
                       tasks_per_node: int = 2) -> str:
    """slurm/pretrain.sbatch with CPU ranks, one core each, its log in `log`: the job id."""
    return run(["sbatch", "--parsable", f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}", "--gpus-per-node=0",
                "--cpus-per-task=1", f"--partition={partition}", "--time=10", f"--output={log}", str(SBATCH),
                str(config), f"output_dir={out}", *overrides]).strip()


def assert_same_weights(a: Path, b: Path) -> None:
    """Two runs' exports hold the same fp32 weights (CPU: a resumed run repeats the uninterrupted one's steps)."""
    left, right = load_file(a / "export" / "model.safetensors"), load_file(b / "export" / "model.safetensors")
    assert left.keys() == right.keys()
    worst = max((left[k] - right[k]).abs().max().item() for k in left)
    assert worst <= 1e-6, f"resumed weights differ from uninterrupted ones by up to {worst}"
