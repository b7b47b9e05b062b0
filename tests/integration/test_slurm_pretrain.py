"""Pretraining as one SLURM job on the local cluster, through both front ends: launchers/pretrain.py (submitit)
and slurm/pretrain.sbatch. Each runs 2 CPU ranks to the end; SIGUSR2 mid-run (what `--signal=USR2@N` sends
before the time limit) makes every rank checkpoint, the job requeue itself and resume, with each step trained
and logged exactly once; a cancelled job stays cancelled. Jobs are polled with scontrol (no sacct here)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from _launch import job_info
from _pretrain_jobs import (SIGUSR2, slurm, submit_with_launcher, submit_with_sbatch, train_steps, wait_for_steps,
                            wait_until_ended, write_config)

from medtrain.errors import UserError
from medtrain.cluster.pretrain_job import run_finished, submit_pretrain
from medtrain.cluster.resources import SlurmResources

pytestmark = pytest.mark.integration

def stopped_at(log_text: str) -> int:
    """The step rank 0 checkpointed at on the signal."""
    match = re.search(rf"rank 0: stopped by signal {SIGUSR2} at step (\d+)", log_text)
    assert match, f"no stop by SIGUSR2 in the log:\n{log_text[-3000:]}"
    return int(match[1])


def assert_finished_once(out: Path, max_steps: int) -> None:
    assert train_steps(out) == list(range(1, max_steps + 1))
    assert (out / "export" / "model.safetensors").is_file()


def test_launcher_runs_two_ranks_to_completion(slurm_cluster, sample_shards: Path, tmp_path: Path,
                                               jobs: list[str]) -> None:
    max_steps = 12
    out = tmp_path / "run"
    job_id, output = submit_with_launcher(write_config(tmp_path, sample_shards, max_steps, save_every=5), out,
                                          slurm_cluster.partition)
    jobs.append(job_id)
    assert f"tensorboard --logdir {out}" in output and str(out / "slurm") in output
    info = wait_until_ended(job_id)
    log = out / "slurm" / f"{job_id}_0_log.err"
    assert info["JobState"] == "COMPLETED", log.read_text()[-3000:]
    assert_finished_once(out, max_steps)
    assert info["NumTasks"] == "2" and (out / "slurm" / f"{job_id}_1_log.out").is_file()


def test_launcher_job_checkpoints_on_the_time_limit_signal_requeues_and_resumes(
        slurm_cluster, sample_shards: Path, tmp_path: Path, jobs: list[str]) -> None:
    max_steps = 100
    out = tmp_path / "run"
    # No periodic checkpoint: the one the run resumes from can only be the one written on the signal.
    job_id, _ = submit_with_launcher(write_config(tmp_path, sample_shards, max_steps, save_every=1000), out,
                                     slurm_cluster.partition)
    jobs.append(job_id)
    wait_for_steps(job_id, out, 2)
    slurm("scancel", "--signal=USR2", job_id)  # to every task, as SLURM does --signal-delay before the limit
    info = wait_until_ended(job_id)
    log = (out / "slurm" / f"{job_id}_0_log.err").read_text()
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert info["Restarts"] == "1", log[-3000:]
    step = stopped_at(log)
    assert 2 <= step < max_steps
    assert_finished_once(out, max_steps)
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == [f"step-{step:08d}",
                                                                           f"step-{max_steps:08d}"]


def test_sbatch_script_checkpoints_on_the_signal_requeues_and_finishes(
        slurm_cluster, sample_shards: Path, tmp_path: Path, jobs: list[str]) -> None:
    max_steps = 100
    out, log = tmp_path / "run", tmp_path / "sbatch.out"
    job_id = submit_with_sbatch(write_config(tmp_path, sample_shards, max_steps, save_every=1000), out,
                                slurm_cluster.partition, log)
    jobs.append(job_id)
    wait_for_steps(job_id, out, 2)
    slurm("scancel", "--signal=USR2", job_id)
    info = wait_until_ended(job_id)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", text[-3000:]
    assert 2 <= stopped_at(text) < max_steps
    assert "requeueing job" in text and f"finished; model in {out}/export" in text
    assert text.count("medtrain: job ") == 2  # one start, one restart; --open-mode=append keeps both
    assert_finished_once(out, max_steps)


def test_cancelled_job_stops_and_is_not_requeued(slurm_cluster, sample_shards: Path, tmp_path: Path,
                                                 jobs: list[str]) -> None:
    """scancel's SIGTERM also makes the ranks save and return (when they manage it within KillWait); the job is
    then no longer RUNNING, and `scontrol requeue` would resurrect it, so nothing may requeue it."""
    out = tmp_path / "run"
    # num_workers=0: scancel's SIGTERM reaches every process of the step, and PyTorch's DataLoader workers die
    # of it, which would fail the ranks before they reach the check after train() that this test is about.
    job_id, _ = submit_with_launcher(write_config(tmp_path, sample_shards, 1000, save_every=1000, num_workers=0),
                                     out, slurm_cluster.partition)
    jobs.append(job_id)
    wait_for_steps(job_id, out, 2)
    slurm("scancel", job_id)
    assert wait_until_ended(job_id)["JobState"] == "CANCELLED"
    time.sleep(3)  # a wrong `scontrol requeue` from the stopping ranks would bring it back as PENDING by now
    info = job_info(job_id)
    assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "0")
    assert not (out / "export").exists()


def test_misspelt_slurm_parameter_lists_valid_names(slurm_cluster, sample_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^slurm.extra.exlude: unknown SLURM parameter; did you mean exclude.*valid "
                                        r"SLURM parameters: additional_parameters, .*nodelist"):
        submit_pretrain(write_config(tmp_path, sample_shards, 10, save_every=5),
                        resources=SlurmResources(partition=slurm_cluster.partition, extra={"exlude": "node7"}),
                        folder=tmp_path / "logs")
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_a_stale_export_does_not_count_as_finished(tmp_path: Path) -> None:
    """A run extended with more steps in the same output_dir must still be requeued when stopped."""
    (tmp_path / "export").mkdir()
    assert run_finished(tmp_path)  # exported, no checkpoint
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step-00000010\n")
    os.utime(tmp_path / "export", ns=(1, 1))
    assert not run_finished(tmp_path)  # checkpointed since the export: stopped, not finished
