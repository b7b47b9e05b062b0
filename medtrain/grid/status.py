"""Where each run of a grid stands: completed, pending, running, requeued, failed (with a one-line reason), or
not submitted. The sources, in order:

1. GRID_DIR/runs/<signature>/results.json: finetune writes it last, atomically -> completed, whatever else says.
2. jobs.json names the run's job (an array task may hold several runs, done one after another);
   medtrain.cluster.jobs tells where that job stands (squeue, no sacct). A run whose task is running but
   which has not started yet (no config.yaml in its folder) behind earlier runs of the task is pending.
3. A run that failed inside its task wrote RUN_DIR/failed.json: once the task has ended, failed with that
   reason (while the task goes on with its other runs, the task's state, the reason in the detail).
4. A job that has ended without results.json failed; the reason comes from its logs (medtrain.cluster.jobs).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from medtrain.cluster.jobs import PENDING, REQUEUED, RUNNING, SlurmJob, failure_reason, find_job, job_log_paths, \
    query_squeue, recorded_failure, slurm_state
from medtrain.finetune import RESULTS
from medtrain.grid.records import load_jobs
from medtrain.grid.spec import Grid, Run
from medtrain.io import pid_alive

COMPLETED, FAILED, NOT_SUBMITTED = "completed", "failed", "not submitted"
STATES = (COMPLETED, RUNNING, PENDING, REQUEUED, FAILED, NOT_SUBMITTED)
LOG_FOLDER = "slurm"


@dataclasses.dataclass(frozen=True)
class RunStatus:
    run: Run
    state: str
    job_id: str | None
    detail: str
    """Failed: why, in one line. Pending: SLURM's reason. Running after a requeue: how often it restarted."""


# ----------------------------------------------------------------------------- per run


def run_status(run: Run, record: dict[str, Any] | None, jobs: dict[str, SlurmJob], log_folder: Path) -> RunStatus:
    """One run's state from its folder, its jobs.json record and squeue (see the module docstring)."""
    job_id = record.get("job_id") if record else None
    if run.complete:
        return RunStatus(run, COMPLETED, job_id, "")
    if record is None:
        return RunStatus(run, NOT_SUBMITTED, None, "")
    if record.get("executor") == "local":
        return _local_status(run, record)
    job = find_job(jobs, job_id)
    state = slurm_state(job) if job else None
    failed = recorded_failure(run.run_dir)
    if state is not None:
        notes = [f"restarted {job.restarts}x"] if job.restarts else []
        if failed:
            notes.insert(0, f"failed, its task goes on: {failed}")
        elif state == RUNNING and record.get("task_position") and not (run.run_dir / "config.yaml").is_file():
            state = PENDING
            notes.append("after earlier runs of its task")
        if state != RUNNING and job.reason not in ("", "None"):
            notes.append(job.reason)  # why it waits: JobArrayTaskLimit, Resources, BeginTime, ...
        return RunStatus(run, state, job_id, "; ".join(notes))
    if failed:
        return RunStatus(run, FAILED, job_id, failed)
    reason = failure_reason(log_folder, job_id, job) or \
        f"ended without {RESULTS}; see {job_log_paths(log_folder, job_id)[1]}"
    if reason.endswith("DUE TO JOB REQUEUE"):
        if job is None:  # between its requeue and reappearing as PENDING in squeue
            return RunStatus(run, REQUEUED, job_id, "being requeued")
        # the requeue's log line is stale: the restart itself ended, without a line of its own
        reason = f"restarted after a requeue, then ended in SLURM state {job.state}; see " \
                 f"{job_log_paths(log_folder, job_id)[1]}"
    return RunStatus(run, FAILED, job_id, reason)


def _local_status(run: Run, record: dict[str, Any]) -> RunStatus:
    job = f"local:{record.get('pid')}"
    failed = recorded_failure(run.run_dir)
    if failed and not pid_alive(record.get("pid")):
        return RunStatus(run, FAILED, job, failed)
    if record.get("reason"):
        return RunStatus(run, FAILED, job, record["reason"])
    if pid_alive(record.get("pid")):
        started = (run.run_dir / "config.yaml").is_file()
        return RunStatus(run, RUNNING if started else PENDING, job, "")
    return RunStatus(run, FAILED, job, "its `medtrain grid submit` ended before the run finished")


def grid_status(grid: Grid) -> list[RunStatus]:
    """Every run of the grid, in spec order."""
    records = load_jobs(grid.grid_dir)
    unfinished = [records[r.signature] for r in grid.runs if r.signature in records and not r.complete]
    jobs = query_squeue([r["job_id"] for r in unfinished if r.get("executor") == "slurm"])
    return [run_status(run, records.get(run.signature), jobs, grid.grid_dir / LOG_FOLDER) for run in grid.runs]


# ----------------------------------------------------------------------------- the table


def format_status(statuses: list[RunStatus]) -> str:
    """A text table, one run a line: its name (medtrain/grid/names.py), state, job and signature (its folder,
    GRID_DIR/runs/<signature>), then why it failed or waits; then the counts."""
    header = ("run", "state", "job", "signature", "detail")
    rows = [(s.run.name, s.state, s.job_id or "-", s.run.signature, s.detail) for s in statuses]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
             for row in [header, *rows]]
    return "\n".join([*(line.rstrip() for line in lines), count_line(statuses)])


def count_line(statuses: list[RunStatus]) -> str:
    counts = Counter(s.state for s in statuses)
    parts = [f"{counts[state]} {state}" for state in STATES if counts[state]]
    return f"{len(statuses)} runs: {', '.join(parts) or 'none'}"
