"""Where each run of a grid stands: completed, pending, running, requeued, failed (with a one-line reason), or
not submitted. No SLURM accounting needed (`sacct` is often off); the sources, in order:

1. GRID_DIR/runs/<signature>/results.json: finetune writes it last, atomically -> completed, whatever else says.
2. jobs.json names the run's job; `squeue -r -t all` tells a live job's state and restart count (a job that
   ended stays listed for slurmctld's MinJobAge, 300 s by default). PENDING after a restart is "requeued".
3. A job squeue no longer lists (or lists as ended) without results.json failed. The reason: the traceback
   submitit pickled as the job's result (its last line), else the last `slurmstepd: error: *** ... ***` line
   of the job's log (cancelled, time limit), else the state squeue last showed.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medtrain.errors import UserError
from medtrain.io import pid_alive
from medtrain.grid.records import load_jobs
from medtrain.finetune import RESULTS
from medtrain.grid.spec import Grid, Run, short

PENDING, RUNNING, REQUEUED, COMPLETED, FAILED, NOT_SUBMITTED = (
    "pending", "running", "requeued", "completed", "failed", "not submitted")
STATES = (COMPLETED, RUNNING, PENDING, REQUEUED, FAILED, NOT_SUBMITTED)
LIVE = (PENDING, RUNNING, REQUEUED)
"""A run in one of these states has a job that will still write its results: never launch it again."""
SLURM_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING",
                 "STAGE_OUT"}
SLURM_REQUEUED = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
SQUEUE_FIELDS = "JobArrayID:64,State:24,RestartCnt:8,Reason:200"
REASON_CHARS = 300
LOG_FOLDER = "slurm"


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """One array task (or job) as squeue shows it."""

    state: str
    restarts: int
    reason: str


@dataclasses.dataclass(frozen=True)
class RunStatus:
    run: Run
    state: str
    job_id: str | None
    detail: str
    """Failed: why, in one line. Pending: SLURM's reason. Running after a requeue: how often it restarted."""


# ----------------------------------------------------------------------------- SLURM


def query_squeue(job_ids: Iterable[str]) -> dict[str, SlurmJob]:
    """{job id ("1234_5" for array tasks): state} for the jobs slurmctld still knows."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    command = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-O", SQUEUE_FIELDS]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot ask SLURM for the grid's jobs (squeue: {exc.__class__.__name__}): run this on a "
                        "machine that can reach the cluster") from None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every job has left slurmctld's memory
            return {}
        raise UserError(f"cannot ask SLURM for the grid's jobs: squeue: {last_line(out.stderr)}")
    return parse_squeue(out.stdout)


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """Array tasks still in one record (`12_[3-5%2]`) are listed one by one."""
    jobs = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        job = SlurmJob(fields[1], int(fields[2]) if fields[2].isdigit() else 0, " ".join(fields[3:]))
        grouped = re.fullmatch(r"(\d+)_\[([\d,-]+)(?:%\d+)?\]", fields[0])
        for index in _expand_range(grouped[2]) if grouped else []:
            jobs[f"{grouped[1]}_{index}"] = job
        if not grouped:
            jobs[fields[0]] = job
    return jobs


def _expand_range(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def find_job(jobs: dict[str, SlurmJob], job_id: str) -> SlurmJob | None:
    """An array task's own record, else its array's record: tasks that never started (e.g. cancelled while
    pending) stay in the array's record, which squeue shows under the bare array id."""
    return jobs.get(job_id) or (jobs.get(job_id.split("_")[0]) if "_" in job_id else None)


def slurm_state(job: SlurmJob) -> str | None:
    """pending / running / requeued for a live job; None once it has ended."""
    if job.state == "PENDING":
        return REQUEUED if job.restarts else PENDING
    if job.state in SLURM_REQUEUED:
        return REQUEUED
    if job.state in SLURM_RUNNING:
        return RUNNING
    return None


# ----------------------------------------------------------------------------- failure reasons


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:REASON_CHARS] if lines else ""


def traceback_reason(text: str) -> str:
    """`medtrain.errors.UserError: path: message` -> `UserError: path: message` (a traceback's last line)."""
    line = last_line(text)
    match = re.match(r"^([\w.]+): (.*)$", line)
    return f"{match[1].rsplit('.', 1)[-1]}: {match[2]}" if match else line


def job_log_paths(log_folder: Path, job_id: str) -> tuple[Path, Path]:
    """submitit's result pickle and stderr log of a job's first task."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(log_folder, job_id, 0)
    return paths.result_pickle, paths.stderr


def failure_reason(log_folder: Path, job_id: str, job: SlurmJob | None) -> str:
    result, stderr = job_log_paths(log_folder, job_id)
    if result.is_file():
        with open(result, "rb") as f:
            outcome, value = pickle.load(f)  # submitit writes ("error", traceback text) or ("success", result)
        if outcome == "error":
            return traceback_reason(str(value))
    if stderr.is_file():
        stops = re.findall(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ (.+?) \*\*\*", stderr.read_text(errors="replace"))
        if stops:
            return stops[-1]
    if job is not None:
        return f"SLURM state {job.state}" + (f" ({job.reason})" if job.reason not in ("", "None") else "")
    return f"ended without {RESULTS}; see {stderr}"


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
    if state is not None:
        notes = [f"restarted {job.restarts}x"] if job.restarts else []
        if state != RUNNING and job.reason not in ("", "None"):
            notes.append(job.reason)  # why it waits: JobArrayTaskLimit, Resources, BeginTime, ...
        return RunStatus(run, state, job_id, "; ".join(notes))
    reason = failure_reason(log_folder, job_id, job)
    if reason.endswith("DUE TO JOB REQUEUE"):  # between its requeue and reappearing as PENDING in squeue
        return RunStatus(run, REQUEUED, job_id, "being requeued")
    return RunStatus(run, FAILED, job_id, reason)


def _local_status(run: Run, record: dict[str, Any]) -> RunStatus:
    job = f"local:{record.get('pid')}"
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
    """A text table, one run a line (with the axis and combination values that differ), then the counts."""
    header = ("run", "state", "job", "params", "detail")
    shown = {s.run.signature: {k: short(v) for k, v in s.run.params.items()} for s in statuses}
    varying = {k for p in shown.values() for k in p if len({q.get(k) for q in shown.values()}) > 1}
    rows = [(s.run.signature, s.state, s.job_id or "-",
             " ".join(f"{k}={v}" for k, v in shown[s.run.signature].items() if k in varying) or "-", s.detail)
            for s in statuses]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
             for row in [header, *rows]]
    return "\n".join([*(line.rstrip() for line in lines), count_line(statuses)])


def count_line(statuses: list[RunStatus]) -> str:
    counts = Counter(s.state for s in statuses)
    parts = [f"{counts[state]} {state}" for state in STATES if counts[state]]
    return f"{len(statuses)} runs: {', '.join(parts) or 'none'}"
