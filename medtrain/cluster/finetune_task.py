"""Grid runs as one submitit task: what each SLURM array task (or local worker process) calls.

A task holds one or more runs (slurm.runs_per_task, local_runs_per_process) and does them one after another in
one interpreter, so Python, torch and transformers start once per task. Only the runs' resolved configs travel
in the pickle. Weights, optimizer state and the epoch reached live in each run's folder (finetune's
checkpoint/last.pt, written after every epoch), so a task that is stopped and started again skips its runs
that are complete (results.json) or failed in it (failed.json), and continues the one it was in after its last
finished epoch.

A run that raises (a missing data path, say) does not stop the task's other runs: its one-line reason goes to
RUN_DIR/failed.json (written atomically; `medtrain grid status` prefers it to the task's logs, and
`medtrain grid submit` removes it when it launches the run again) and its traceback to the task's log.

Stopped how, and what happens (submitit 1.5, core/job_environment.py):
- time limit or preemption: `--signal=USR2@signal_delay_s` reaches the task; submitit's handler calls
  `checkpoint()`, pickles the DelayedSubmission it returns over the job's submitted pickle, runs
  `scontrol requeue <array job>_<index>` and exits. The epoch in progress is lost, finished ones are not.
- `scontrol requeue` from outside (or a preemption that requeues): SIGTERM, which submitit ignores, then
  SIGKILL after KillWait; SLURM starts the same pickle again.
- a run that failed: once the task's other runs have ended, the task raises (one run: that run's own
  exception), submitit pickles the traceback as the job's result and the array task ends FAILED; the other
  tasks of the array are not affected.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from medtrain.cluster.jobs import record_failure, recorded_failure, traceback_reason
from medtrain.config import build_config
from medtrain.errors import UserError

RESULTS_FILE = "results.json"  # medtrain.finetune.RESULTS, without importing torch here


class FinetuneTask(submitit.helpers.Checkpointable):
    """`configs`: resolved FinetuneConfigs as plain data (one, or several done in order); `threads`: PyTorch
    threads, the CPUs the task was given (PyTorch would otherwise start one per core of the whole node);
    `log_dir`: local runs only, each run's stdout and stderr (file descriptors, so libraries' too) go to
    log_dir/<run folder's name>.log."""

    def __init__(self, configs: dict[str, Any] | Sequence[dict[str, Any]], threads: int | None = None,
                 log_dir: Path | None = None):
        self.configs = [configs] if isinstance(configs, dict) else list(configs)
        self.threads = threads
        self.log_dir = log_dir

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A task pickled before runs_per_task (one `config`) still runs when SLURM requeues it."""
        if "config" in state:
            state = {"configs": [state.pop("config")], "log_dir": None, **state}
        self.__dict__.update(state)

    def __call__(self) -> list[str]:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        failures: list[tuple[str, BaseException | str]] = []
        for config in self.configs:
            run_dir = Path(config["output_dir"])
            if (run_dir / RESULTS_FILE).is_file():
                continue  # done before a requeue
            earlier = recorded_failure(run_dir)
            if earlier:  # failed in this task before a requeue: not tried again in it
                failures.append((str(run_dir), earlier))
                continue
            with _output_to(self.log_dir / f"{run_dir.name}.log" if self.log_dir else None):
                error = self._run_one(config)
            if error is not None:
                failures.append((str(run_dir), error))
        if len(self.configs) == 1 and failures and isinstance(failures[0][1], BaseException):
            raise failures[0][1]
        if failures:
            raise UserError(f"{len(failures)} of {len(self.configs)} runs of this task failed: "
                            + ", ".join(f"{run} ({_reason(err)})" for run, err in failures))
        return [str(config["output_dir"]) for config in self.configs]

    @staticmethod
    def _run_one(config: dict[str, Any]) -> Exception | None:
        """Runs it; a failure is recorded in its folder and returned, not raised."""
        from medtrain.finetune import FinetuneConfig
        from medtrain.finetune.run import finetune

        try:
            finetune(build_config(FinetuneConfig, config))
        except UncompletedJobError:  # submitit's signal handler: out of requeues; the whole task ends here
            raise
        except Exception as exc:  # any failure of one run is recorded, and the task's other runs go on
            traceback.print_exc()
            sys.stderr.flush()
            record_failure(Path(config["output_dir"]), traceback_reason(traceback.format_exc()))
            return exc
        return None

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue this same task: the state to resume from is in its runs' folders, not in this object."""
        return submitit.helpers.DelayedSubmission(self)


def _reason(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    return traceback_reason("".join(traceback.format_exception_only(type(error), error)))


@contextlib.contextmanager
def _output_to(log: Path | None) -> Iterator[None]:
    """stdout and stderr to `log` for the block (the file descriptors, so libraries' too, and Python's
    sys.stdout/sys.stderr, whatever they were), then back; nothing when log is None."""
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            f.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
