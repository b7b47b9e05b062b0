"""One grid run as a submitit task: what each SLURM array task (or local worker) calls.

Only the run's resolved config travels in the pickle. Weights, optimizer state and the epoch reached live in
the run folder (finetune's checkpoint/last.pt, written after every epoch), so a task that is stopped and
started again continues after its last finished epoch, and a complete run started again does nothing.

Stopped how, and what happens (submitit 1.5, core/job_environment.py):
- time limit or preemption: `--signal=USR2@signal_delay_s` reaches the task; submitit's handler calls
  `checkpoint()`, pickles the DelayedSubmission it returns over the job's submitted pickle, runs
  `scontrol requeue <array job>_<index>` and exits. The epoch in progress is lost, finished ones are not.
- `scontrol requeue` from outside (or a preemption that requeues): SIGTERM, which submitit ignores, then
  SIGKILL after KillWait; SLURM starts the same pickle again.
- an exception (a missing data path, say): submitit pickles the traceback as the job's result and the
  array task ends FAILED; the other tasks of the array are not affected.
"""

from __future__ import annotations

from typing import Any

import submitit

from medtrain.config import build_config


class FinetuneTask(submitit.helpers.Checkpointable):
    """`config`: a resolved FinetuneConfig as plain data; `threads`: PyTorch threads, the CPUs the task was
    given (PyTorch would otherwise start one per core of the whole node)."""

    def __init__(self, config: dict[str, Any], threads: int | None = None):
        self.config = config
        self.threads = threads

    def __call__(self) -> str:
        import torch

        from medtrain.finetune import FinetuneConfig
        from medtrain.finetune.run import finetune

        if self.threads:
            torch.set_num_threads(self.threads)
        finetune(build_config(FinetuneConfig, self.config))
        return str(self.config["output_dir"])

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue this same task: the state to resume from is in its run folder, not in this object."""
        return submitit.helpers.DelayedSubmission(self)
