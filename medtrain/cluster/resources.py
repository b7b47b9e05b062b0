"""What a SLURM job asks for: one dataclass for grid array tasks, study jobs and both launchers.

Plain values only (no submitit, no torch): configs load it, and `medtrain/cluster/executor.py` turns it into
submitit parameters. Fields left None take the job kind's default (`PRETRAIN`, `FINETUNE`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

PRETRAIN = {"signal_delay_s": 300, "max_timeouts": 10}
"""Finishing the current step plus saving mBERT with its optimizer state takes a minute or two, and SLURM may
send the signal up to a minute early or late; a long pretraining run meets its time limit many times."""
RUNS_PER_TASK = 4
"""Grid runs one after another in one fine-tuning array task (or one local process), by default. Measured on
the 2-core dev machine (tests' sample data, tiny BERT, 1 epoch as in the demo study): a task's start-up
(interpreter, torch, transformers, medtrain) takes 3.3 s wall / ~5 CPU-s, a run's own work 0.3-1.7 s; one run
a task is therefore >70 % start-up, 4 runs a task pay it once for ~4 s of work and turn the demo study's 36
tasks into 9. Runs of minutes or hours make start-up negligible: there, set 1 to spread runs over more tasks
(array_parallelism) and to keep a requeue's work to one run."""
FINETUNE = {"cpus_per_task": 1, "signal_delay_s": 120, "max_timeouts": 3, "runs_per_task": RUNS_PER_TASK}
"""A fine-tuning run saves after each epoch only; a run that keeps timing out is given up after 3 requeues."""


@dataclasses.dataclass
class SlurmResources:
    """What each job (pretraining: the whole multi-node job; fine-tuning: one array task) asks SLURM for."""

    nodes: int = 1
    tasks_per_node: int | None = None
    """CPU ranks per node when gpus_per_node is 0 (pretraining; default 1)."""
    gpus_per_node: int = 0
    """Pretraining: one rank per GPU."""
    gpus_per_task: int = 0
    """Fine-tuning: GPUs of each array task (one run)."""
    partition: str | None = None
    """Default: the cluster's default partition."""
    time_min: int = 60
    """Per job (fine-tuning: per array task, for all of its runs_per_task runs); a job stopped by the limit is
    requeued and resumes from what it saved."""
    cpus_per_task: int | None = None
    """Cores per rank (fine-tuning: also PyTorch's thread count in the run)."""
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    signal_delay_s: int | None = None
    """SIGUSR2 this long before the time limit: save, then requeue. None: the job kind's default."""
    max_timeouts: int | None = None
    """Requeues after hitting the time limit before the job is given up (preemptions are not counted)."""
    runs_per_task: int | None = None
    """Fine-tuning only: grid runs done one after another in each array task, so Python, torch and transformers
    start once per task rather than once per run (RUNS_PER_TASK by default; 1: one run per task). Each run keeps
    its folder and resume: a requeued task skips its runs that are done and resumes the one it was in."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Other submitit SLURM parameters (sbatch options, `_` for `-`), e.g. {exclude: node07, setup: [...]}."""

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.time_min < 1 or (self.tasks_per_node is not None and self.tasks_per_node < 1) \
                or (self.cpus_per_task is not None and self.cpus_per_task < 1):
            raise ValueError("slurm.nodes, time_min, tasks_per_node and cpus_per_task must be >= 1")
        if min(self.gpus_per_node, self.gpus_per_task, self.signal_delay_s or 0, self.max_timeouts or 0) < 0:
            raise ValueError("slurm.gpus_per_node, gpus_per_task, signal_delay_s and max_timeouts must be >= 0")
        if self.runs_per_task is not None and self.runs_per_task < 1:
            raise ValueError("slurm.runs_per_task must be >= 1")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ValueError("slurm.mem_gb must be > 0")

    def with_defaults(self, defaults: dict[str, Any]) -> SlurmResources:
        """A copy with the fields left None set from `defaults` (PRETRAIN or FINETUNE)."""
        return dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
