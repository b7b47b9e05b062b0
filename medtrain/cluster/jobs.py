"""Where a SLURM job stands, without SLURM accounting (`sacct` is often off), and why it failed.

`squeue -r -t all` tells a live job's state and restart count (a job that ended stays listed for slurmctld's
MinJobAge, 300 s by default); PENDING after a restart is "requeued". Once squeue no longer lists a job, the
reason it ended comes from its logs: the traceback submitit pickled as the job's result (its last line), else
the last `slurmstepd: error: *** ... ***` line of the job's log (cancelled, time limit), else the state squeue
last showed. A run's own RUN_DIR/failed.json (record_failure, written by the task that ran it) comes before
all of these: several runs may share one array task, its logs and its result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from medtrain.errors import UserError
from medtrain.io import write_json_atomic

PENDING, RUNNING, REQUEUED = "pending", "running", "requeued"
LIVE = (PENDING, RUNNING, REQUEUED)
"""A job in one of these states will still write its results: never launch its work again."""
SLURM_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING",
                 "STAGE_OUT"}
SLURM_REQUEUED = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
SQUEUE_FIELDS = "JobArrayID:64,State:24,RestartCnt:8,Reason:200"
REASON_CHARS = 300
FAILED_FILE = "failed.json"
"""RUN_DIR/failed.json: why one run of an array task (or local process) failed, written by the task itself
(several runs share a task, its logs and its result pickle): {"reason": one line, "job_id": ..., "time": ...}."""


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """One job (or array task) as squeue shows it."""

    state: str
    restarts: int
    reason: str


def query_squeue(job_ids: Iterable[str]) -> dict[str, SlurmJob]:
    """{job id ("1234_5" for array tasks): state} for the jobs slurmctld still knows."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    command = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-O", SQUEUE_FIELDS]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot ask SLURM about jobs (squeue: {exc.__class__.__name__}): run this on a machine "
                        "that can reach the cluster") from None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every job has left slurmctld's memory
            return {}
        raise UserError(f"cannot ask SLURM about jobs: squeue: {last_line(out.stderr)}")
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


def job_is_live(job_id: str | None) -> bool:
    """Pending, running or requeued in squeue."""
    job = find_job(query_squeue([job_id]), job_id) if job_id else None
    return job is not None and slurm_state(job) is not None


def job_is_running(job_id: str) -> bool:
    """RUNNING itself: not cancelled, not being requeued from outside."""
    job = find_job(query_squeue([job_id]), job_id)
    return job is not None and job.state == "RUNNING"


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


def record_failure(run_dir: Path, reason: str) -> None:
    """In the task, as the run fails: RUN_DIR/failed.json, atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job_id = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if array else os.environ.get("SLURM_JOB_ID")
    write_json_atomic(run_dir / FAILED_FILE, {"reason": reason, "job_id": job_id,
                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def recorded_failure(run_dir: Path) -> str | None:
    """The reason in RUN_DIR/failed.json; None without one."""
    path = run_dir / FAILED_FILE
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["reason"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return f"unreadable {path}"


def clear_failure(run_dir: Path) -> None:
    """When the run is launched again."""
    (run_dir / FAILED_FILE).unlink(missing_ok=True)


def failure_reason(log_folder: Path, job_id: str, job: SlurmJob | None) -> str | None:
    """Why an ended job did not finish, in one line; None when neither its logs nor squeue say."""
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
    return None
