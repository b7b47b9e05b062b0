"""Pretraining and a fine-tuning grid across two SLURM hosts (tests/cluster/slurm_up.sh STATE 2: hosts n1 and n2,
each a network namespace with its own address, one core each), and a host that dies mid-run.

Both front ends (slurm/pretrain.sbatch and launchers/pretrain.py) train with ZeRO-2 and ZeRO-3, one rank per host;
rank 0 meets rank 1 at n1's bridge address, never a loopback one. When n2 dies (slurmd and every job process
killed), rank 0's collective fails at once with a log line, SLURM marks n2 DOWN and requeues the job; once n2 is
back the job resumes from its last checkpoint and ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForMaskedLM

from _launch import REPO, run
from _pretrain_jobs import (assert_same_weights, slurm, submit_with_launcher, submit_with_sbatch, train_steps,
                            wait_for, wait_until_ended, write_config)

from medtrain.grid.spec import load_grid
from medtrain.grid.status import COMPLETED, grid_status
from medtrain.grid.submit import cancel_grid

pytestmark = pytest.mark.integration

STEPS = 40
SAVE_EVERY = 10
SHORT_STEPS = 6
ZERO = {stage: f"deepspeed={REPO / 'ds_configs' / f'zero{stage}.json'}" for stage in (2, 3)}
GRID_WAIT_S = 300


def sbatch(cluster, config: Path, out: Path, log: Path, *overrides: str) -> str:
    return submit_with_sbatch(config, out, cluster.partition, log, *overrides, nodes=2, tasks_per_node=1)


def assert_ran_across_both_hosts(cluster, log: str, out: Path, steps: int) -> None:
    """Rank 0 at n1's address (not loopback); one writer of the logs, TensorBoard and export; a loadable export."""
    match = re.search(r"2 ranks \(slurm\), rendezvous at (\S+) \(([\d.]+)\):\d+;", log)
    assert match, log[-3000:]
    assert match.groups() == ("n1", cluster.address("n1")) and not match[2].startswith("127.")
    assert log.count("rendezvous at") == 1 and log.count(f"trained {steps} steps") == 1
    assert train_steps(out) == list(range(1, steps + 1))
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    model = AutoModelForMaskedLM.from_pretrained(str(out / "export"))
    assert model.config.hidden_size == 32


@pytest.fixture(scope="module")
def reference(two_host_cluster, sample_shards: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, Path, str]:
    """An uninterrupted ZeRO-2 run through sbatch across n1 and n2: its folder, config and log text."""
    folder = tmp_path_factory.mktemp("two-hosts")
    config = write_config(folder, sample_shards, STEPS, save_every=SAVE_EVERY)
    out, log = folder / "reference", folder / "reference.log"
    job_id = sbatch(two_host_cluster, config, out, log, ZERO[2])
    try:
        info = wait_until_ended(job_id)
    finally:
        slurm("scancel", job_id)
    assert info["JobState"] == "COMPLETED", log.read_text()[-3000:]
    return out, config, log.read_text()


def test_sbatch_zero2_trains_across_two_hosts(two_host_cluster, reference: tuple[Path, Path, str]
                                              ) -> None:
    out, _, log = reference
    assert "2 ranks on n[1-2]" in log
    assert_ran_across_both_hosts(two_host_cluster, log, out, STEPS)
    # ZeRO-2: one model file from rank 0, an optimizer partition per rank.
    last = out / "checkpoints" / f"step-{STEPS:08d}"
    assert sorted(p.name for p in last.glob("*model_states.pt")) == ["mp_rank_00_model_states.pt"]
    assert len(list(last.glob("*optim_states.pt"))) == 2


@pytest.mark.parametrize(("front_end", "stage"), [("sbatch", 3), ("launcher", 2), ("launcher", 3)])
def test_each_front_end_trains_each_zero_stage_across_two_hosts(
        two_host_cluster, reference: tuple[Path, Path, str], tmp_path: Path, jobs: list[str],
        front_end: str, stage: int) -> None:
    _, config, _ = reference
    out = tmp_path / "run"
    overrides = [ZERO[stage], f"train.max_steps={SHORT_STEPS}"]
    if front_end == "sbatch":
        log_file = tmp_path / "sbatch.log"
        jobs.append(sbatch(two_host_cluster, config, out, log_file, *overrides))
    else:
        job_id, _ = submit_with_launcher(config, out, two_host_cluster.partition, *overrides, nodes=2,
                                         tasks_per_node=1)
        jobs.append(job_id)
        log_file = out / "slurm" / f"{job_id}_0_log.err"
    info = wait_until_ended(jobs[-1])
    log = log_file.read_text()
    assert info["JobState"] == "COMPLETED" and info["NodeList"] == "n[1-2]", log[-3000:]
    assert_ran_across_both_hosts(two_host_cluster, log, out, SHORT_STEPS)


def test_a_host_that_dies_ends_the_job_which_resumes_to_the_same_weights(
        two_host_cluster, reference: tuple[Path, Path, str], tmp_path: Path, jobs: list[str]) -> None:
    ref_out, config, _ = reference
    out, log = tmp_path / "run", tmp_path / "sbatch.log"
    job_id = sbatch(two_host_cluster, config, out, log, ZERO[2], "train.collective_timeout_s=60")
    jobs.append(job_id)
    # Killed after the first checkpoint, well before the end: the steps since the last one are trained again.
    wait_for(job_id, lambda info: len(train_steps(out)) > SAVE_EVERY, f"reach step {SAVE_EVERY + 1}")
    two_host_cluster.host("kill", "n2")
    killed_at = time.monotonic()
    # rank 0 sees its collective fail at once; the job ends when SLURM marks n2 DOWN (SlurmdTimeout) and, as
    # a --requeue job, goes back to the queue, where it waits for two hosts.
    wait_for(job_id, lambda info: info["JobState"] == "PENDING" and info["Restarts"] == "1", "be requeued")
    seconds_to_requeue = time.monotonic() - killed_at
    text = log.read_text()
    assert re.search(r"rank 0: a collective failed: .*Connection (closed|reset) by peer", text), text[-3000:]
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert SAVE_EVERY <= int(latest.removeprefix("step-")) < STEPS
    assert "rank 0: a peer died or stopped answering within train.collective_timeout_s=60s; exiting. The next " \
           f"start resumes from {latest}" in text, text[-3000:]
    assert "Node failure on n2" in text and "Traceback" not in text
    assert seconds_to_requeue < 120
    two_host_cluster.host("start", "n2")
    info = wait_until_ended(job_id)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", text[-3000:]
    assert "medtrain: job " + job_id + " (restart 1), 2 ranks on n[1-2]" in text
    assert train_steps(out) == list(range(1, STEPS + 1))
    assert_same_weights(out, ref_out)


def test_a_fine_tuning_grid_array_runs_on_both_hosts(two_host_cluster, reference: tuple[Path, Path, str],
                                                    sample_data: Path, tmp_path: Path) -> None:
    ref_out, _, _ = reference
    ner = sample_data / "ner" / "es"
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump({
        "grid_dir": str(tmp_path / "grid"),
        "base": {"task": "ner", "model": str(ref_out / "export"),
                 "data": {"format": "brat", "train": str(ner / "train"), "dev": str(ner / "dev"),
                          "test": {"es": str(ner / "test")}},
                 "train": {"epochs": 1, "lr": 3e-3, "batch_size": 8, "max_length": 32}, "eval": {"bootstrap": 20}},
        "combos": [{"train.seed": 0}, {"train.seed": 1}],
        "array_parallelism": 2, "slurm": {"partition": two_host_cluster.partition, "time_min": 10,
                                          "runs_per_task": 1}}))  # one run a task: a task per host
    grid = load_grid(spec)
    try:
        output = run([sys.executable, str(REPO / "launchers" / "finetune_grid.py"), str(spec)])
        assert re.search(r"submitted SLURM array \d+: 2 runs", output), output
        deadline = time.monotonic() + GRID_WAIT_S
        while {s.state for s in grid_status(grid)} != {COMPLETED}:
            assert time.monotonic() < deadline, [(s.state, s.detail) for s in grid_status(grid)]
            time.sleep(1)
    finally:
        cancel_grid(grid)
    # submitit's log of each array task names the host that ran it.
    hosts = {m for log in grid.grid_dir.rglob("*_log.out") for m in re.findall(r"hostname=(n\d)", log.read_text())}
    assert hosts == {"n1", "n2"}
    for status in grid_status(grid):
        assert json.loads((status.run.run_dir / "results.json").read_text())["eval_languages"] == ["es"]

