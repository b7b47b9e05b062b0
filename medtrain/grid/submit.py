"""Launch a grid's missing runs: as ONE SLURM job array through submitit, or on this machine; cancel them.

Idempotent: a run whose results.json exists is skipped, and so is one whose job is still pending, running or
requeued (grid.status); everything else (never submitted, failed, cancelled) is launched. Running `submit`
again after failures therefore launches exactly the runs that are missing. A model or data path that does not
exist is one error before anything is launched; every submission puts each run's TensorBoard events in the
folder of its name (medtrain/grid/tensorboard.py). Progress lines name runs as `medtrain grid status` does.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from medtrain.cluster import executor
from medtrain.cluster.finetune_task import FinetuneTask
from medtrain.cluster.jobs import LIVE, clear_failure, find_job, query_squeue, recorded_failure, slurm_state
from medtrain.config import build_config
from medtrain.errors import UserError
from medtrain.finetune import FinetuneConfig
from medtrain.finetune.config import Source, check_inputs as check_run_inputs
from medtrain.grid.records import load_jobs, new_record, save_jobs, submit_lock
from medtrain.grid.spec import Grid, Run
from medtrain.grid.status import COMPLETED, LOG_FOLDER, RunStatus, grid_status
from medtrain.grid.tensorboard import link_runs

JOB_NAME = "medtrain-grid"
LOCAL_LOGS = "local"

Print = Callable[[str], None]


def runs_to_launch(statuses: list[RunStatus]) -> list[Run]:
    """Not complete and without a live job."""
    return [s.run for s in statuses if s.state != COMPLETED and s.state not in LIVE]


def submit_grid(grid: Grid, say: Print = print) -> list[Run]:
    """Launch the runs that are missing; returns them. SLURM: returns once the array is queued; local:
    once every run has ended."""
    with submit_lock(grid.grid_dir):
        statuses = grid_status(grid)
        todo = runs_to_launch(statuses)
        complete = sum(s.state == COMPLETED for s in statuses)
        live = sum(s.state in LIVE for s in statuses)
        collapsed = f" ({grid.duplicates} duplicate combinations collapsed)" if grid.duplicates else ""
        say(f"{len(grid.runs)} runs{collapsed}: {complete} complete, {live} pending or running, "
            f"{len(todo)} to launch")
        link_runs(grid, statuses)
        if not todo:
            return []
        check_inputs(grid, todo)
        for run in todo:  # an earlier attempt's reason would otherwise outlive this one
            clear_failure(run.run_dir)
        if grid.spec.executor == "slurm":
            _submit_array(grid, todo, say)
        else:
            _run_locally(grid, todo, say)
        return todo


# ----------------------------------------------------------------------------- SLURM


def check_inputs(grid: Grid, runs: list[Run]) -> None:
    """Each run's own input checks (model folder, every data path; NER: every dev/test language shares a type
    with training), here, so that bad input is one error before anything is launched rather than one failed
    job per run. An array that waits on other jobs (slurm.extra.dependency: a study's pretraining) gets its
    models from them, so only its data is checked. Each NER source is read once for all runs; a source that
    does not read (a malformed file) is left to its runs, which fail with the reader's error in their logs,
    so one bad file fails its runs rather than the whole grid."""
    from medtrain.data.ner import NerCorpus, read_ner_corpus
    from medtrain.finetune.labels import check_label_space

    model_pending = grid.spec.executor == "slurm" and "dependency" in grid.spec.slurm.extra
    corpora: dict[tuple[str, str, str], NerCorpus | UserError] = {}

    def read_once(cfg: FinetuneConfig, source: Source, lang: str) -> NerCorpus:
        key = (repr(source), lang, repr(cfg.labels))
        if key not in corpora:
            try:
                corpora[key] = read_ner_corpus(source.path, source.format, source.columns, cfg.labels, lang,
                                               source.brat)
            except UserError as exc:
                corpora[key] = exc
        corpus = corpora[key]
        if isinstance(corpus, UserError):
            raise _Unreadable from corpus
        return corpus

    for run in runs:
        try:
            cfg = build_config(FinetuneConfig, run.config)
            check_run_inputs(cfg, model_pending)
            if cfg.task == "ner":
                check_label_space(cfg, lambda source, lang, cfg=cfg: read_once(cfg, source, lang))
        except _Unreadable:
            continue
        except UserError as exc:
            raise UserError(f"{exc.message}; nothing was launched", exc.path, exc.line) from None


class _Unreadable(Exception):
    """A run's data does not read: its own run reports why."""


def chunks(runs: list[Run], size: int) -> list[list[Run]]:
    """Runs in spec order, `size` to a task (the last may hold fewer)."""
    return [runs[i:i + size] for i in range(0, len(runs), size)]


def _submit_array(grid: Grid, runs: list[Run], say: Print) -> None:
    """One array task per slurm.runs_per_task runs; every run's record names its task's job id (`<array>_<index>`,
    shared by the task's runs) and, with several runs a task, its place in the task's order."""
    res = grid.spec.slurm
    log_folder = grid.grid_dir / LOG_FOLDER
    params = executor.parameters(res, JOB_NAME, slurm_gpus_per_task=res.gpus_per_task or None,
                                 slurm_array_parallelism=grid.spec.array_parallelism)
    groups = chunks(runs, res.runs_per_task or 1)
    tasks = [FinetuneTask([run.config for run in group], res.cpus_per_task) for group in groups]
    jobs = executor.submit(log_folder, params, res.max_timeouts, tasks, local_hint=", or set executor: local")
    records = load_jobs(grid.grid_dir)
    for group, job in zip(groups, jobs):
        for position, run in enumerate(group):
            place = {"task_position": position} if len(group) > 1 else {}
            records[run.signature] = new_record(records.get(run.signature), executor="slurm", job_id=job.job_id,
                                                **place)
    save_jobs(grid.grid_dir, records)
    array = jobs[0].job_id.split("_")[0]
    per_task = f" in {len(jobs)} tasks ({res.runs_per_task} a task, one after another)" \
        if len(groups) < len(runs) else ""
    if len(jobs) > 1:
        say(f"submitted SLURM array {array}: {len(runs)} runs{per_task}, at most "
            f"{grid.spec.array_parallelism} at a time; logs: {log_folder}/{array}_<index>_0_log.out|err")
    else:  # submitit sends a single task as a plain job
        runs_text = f"{len(runs)} runs, one after another" if len(runs) > 1 else "1 run"
        say(f"submitted SLURM job {array}: {runs_text}; logs: {log_folder}/{array}_0_log.out|err")
    say(f"watch with: medtrain grid status {grid.source}")


def cancel_grid(grid: Grid) -> list[str]:
    """scancel the grid's live SLURM jobs (every submission's, including runs no longer in the spec)."""
    records = load_jobs(grid.grid_dir)
    # each job once: the runs of one task share its job id
    ids = list(dict.fromkeys(r["job_id"] for r in records.values() if r.get("executor") == "slurm"))
    jobs = query_squeue(ids)
    live = [job_id for job_id in ids if (job := find_job(jobs, job_id)) and slurm_state(job) is not None]
    if live:
        out = subprocess.run(["scancel", *live], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise UserError(f"scancel failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}")
    return live


# ----------------------------------------------------------------------------- local


def _run_locally(grid: Grid, runs: list[Run], say: Print) -> None:
    """`local_parallelism` fresh processes at a time, each doing `local_runs_per_process` runs one after
    another; each run's output in GRID_DIR/local/<sig>.log."""
    records = load_jobs(grid.grid_dir)
    for run in runs:
        records[run.signature] = new_record(records.get(run.signature), executor="local", pid=os.getpid())
    save_jobs(grid.grid_dir, records)
    groups = chunks(runs, grid.spec.local_runs_per_process)
    workers = min(grid.spec.local_parallelism, len(groups))
    threads = max(1, (os.cpu_count() or 1) // workers)
    logs = grid.grid_dir / LOCAL_LOGS
    logs.mkdir(parents=True, exist_ok=True)
    per_process = f", {grid.spec.local_runs_per_process} per process" if len(groups) < len(runs) else ""
    say(f"running {len(runs)} runs here, {workers} at a time ({threads} threads each{per_process}); logs in {logs}")
    done = 0
    # spawn: a fresh interpreter per worker, not a fork of this one's state.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_local_worker, FinetuneTask([run.config for run in group], threads, logs)): group
                   for group in groups}
        for future in as_completed(futures):
            error = future.exception()
            for run in futures[future]:
                done += 1
                reason = None if run.complete else recorded_failure(run.run_dir) or \
                    (f"worker process died ({error.__class__.__name__})" if error else "ended without results")
                if reason:
                    records[run.signature]["reason"] = reason
                    save_jobs(grid.grid_dir, records)
                outcome = f"failed: {reason}; log {logs / run.signature}.log" if reason else "completed"
                say(f"[{done}/{len(runs)}] {run.name}: {outcome}")


def _local_worker(task: FinetuneTask) -> None:
    """Runs in a pool process; the task records each failed run in its folder (failed.json) and sends each
    run's output to its log."""
    try:
        task()
    except Exception:  # already recorded per run
        pass
