"""One pretraining run as one multi-node SLURM job, submitted through submitit.

    submission = submit_pretrain("pretrain.yaml", ["train.max_steps=20000"],
                                 SlurmResources(nodes=2, gpus_per_node=4, partition="gpu", time_min=24 * 60))

The job's batch script runs `srun python -m submitit.core._submit FOLDER`: one Python process per task
(nodes x tasks_per_node), each calling `PretrainTask()`, i.e. `medtrain.pretrain.train`; medtrain.dist reads
its rank from srun's variables (launcher "slurm"). Weights never travel in the pickle: a run resumes from
its output_dir, so requeueing needs only the config path and overrides.

Time limit and preemption, step by step (submitit 1.5: core/job_environment.py, slurm/slurm.py):
1. `#SBATCH --signal=USR2@signal_delay_s` makes SLURM send SIGUSR2 to every task of the step (not the
   batch shell) that long before the time limit. USR2 rather than USR1: NCCL 2.12 took SIGUSR1 for itself.
2. submitit installs its own handler in each task before calling the task (USR2: on task 0 call
   `checkpoint()`, re-pickle, `scontrol requeue`, exit; SIGTERM: ignored). `train()` then replaces both
   with medtrain's: on USR1/USR2/TERM every rank saves a checkpoint at the next step boundary and returns.
   Left like that, the job would end "completed" after the save and never be requeued.
3. So `PretrainTask` keeps submitit's USR2 handler and, when `train()` returns without having finished
   while the job is still RUNNING, calls it itself: task 0 requeues only after every rank's checkpoint
   is complete, and submitit still counts timeouts (max_timeouts) and re-pickles via `checkpoint()`.
   A job that is no longer RUNNING was cancelled (scancel: SIGTERM) or requeued from outside
   (`scontrol requeue`, preemption); requeueing it would resurrect a cancelled job, so it is left alone.
4. A signal during start-up, before `train()` has replaced the handlers, goes straight to submitit's
   handler: task 0 requeues at once, and the next run resumes from the last checkpoint on disk.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import submitit

from medtrain.cluster import executor
from medtrain.cluster.jobs import job_is_running
from medtrain.cluster.resources import PRETRAIN, SlurmResources
from medtrain.config import load_config, resolve_config_path
from medtrain.errors import UserError
from medtrain.pretrain import PretrainConfig, train

JOB_NAME = "medtrain-pretrain"
SUBMITIT_SIGNAL = signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]


def run_finished(output_dir: Path) -> bool:
    """The run exported its model after its last checkpoint (an export left by an earlier, shorter run of
    the same output_dir is older than the checkpoints written since)."""
    export, latest = output_dir / "export", output_dir / "checkpoints" / "latest"
    return export.is_dir() and (not latest.exists() or export.stat().st_mtime_ns > latest.stat().st_mtime_ns)


@dataclasses.dataclass(frozen=True)
class PretrainTask:
    """What each SLURM task runs: the config path and overrides, resolved again in the job."""

    config: Path
    overrides: tuple[str, ...]

    def __call__(self) -> int:
        requeue = signal.getsignal(SUBMITIT_SIGNAL)  # submitit's checkpoint-and-requeue; train() replaces it
        cfg = load_config(PretrainConfig, self.config, list(self.overrides))
        code = train(cfg)
        env = submitit.JobEnvironment()
        if env.global_rank != 0 or run_finished(cfg.output_dir):
            return code
        if job_is_running(env.job_id):
            requeue(SUBMITIT_SIGNAL, None)  # checkpoint(), scontrol requeue, exit
        print(f"job {env.job_id} is ending (cancelled, or requeued by SLURM): not requeueing it", file=sys.stderr)
        return code

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Requeue the same task: the state to resume from is in output_dir, not in this object."""
        return submitit.helpers.DelayedSubmission(self)


@dataclasses.dataclass(frozen=True)
class Submission:
    """What a user needs to follow the job: its id, where the run writes, where SLURM's logs go."""

    job_id: str
    output_dir: Path
    log_folder: Path
    ranks: int


def submit_pretrain(config: str | Path, overrides: Sequence[str] = (), resources: SlurmResources | None = None,
                    folder: Path | None = None, after: Sequence[str] = ()) -> Submission:
    """Submit one pretraining run as one SLURM job of nodes x ranks per node; returns at once.

    gpus_per_node > 0 starts one rank per GPU; gpus_per_node = 0 starts tasks_per_node CPU ranks per node.
    The config is validated here, on the login node, so a typo fails now rather than in the queue.
    Logs go to `folder` (default OUTPUT_DIR/slurm). `after`: job ids that must end well first (afterok).
    """
    res = (resources or SlurmResources()).with_defaults(PRETRAIN)
    if res.runs_per_task is not None:
        raise UserError("slurm.runs_per_task: fine-tuning grids only; a pretraining run is one job")
    executor.check_extra(res.extra)
    config_path = resolve_config_path(config).resolve()
    cfg = load_config(PretrainConfig, config_path, list(overrides))
    ranks_per_node = _ranks_per_node(res)
    output_dir = cfg.output_dir.resolve()
    log_folder = Path(folder).resolve() if folder is not None else output_dir / "slurm"
    params = executor.parameters(
        res, JOB_NAME, nodes=res.nodes, tasks_per_node=ranks_per_node, gpus_per_node=res.gpus_per_node or None,
        # A rank that dies would leave the others waiting in a collective until NCCL's timeout.
        srun_args=["--kill-on-bad-exit=1"],
        slurm_dependency=f"afterok:{':'.join(after)}" if after else None)
    job, = executor.submit(log_folder, params, res.max_timeouts, [PretrainTask(config_path, tuple(overrides))])
    return Submission(job.job_id, output_dir, log_folder, res.nodes * ranks_per_node)


def _ranks_per_node(res: SlurmResources) -> int:
    """One rank per GPU; without GPUs, tasks_per_node CPU ranks (default 1)."""
    if res.gpus_per_task:
        raise UserError(f"gpus_per_task={res.gpus_per_task}: a pretraining job takes gpus_per_node (one rank per "
                        "GPU)")
    if res.gpus_per_node and res.tasks_per_node not in (None, res.gpus_per_node):
        raise UserError(f"tasks_per_node={res.tasks_per_node} with gpus_per_node={res.gpus_per_node}: with GPUs "
                        "there is one rank per GPU, so leave tasks_per_node out")
    return res.gpus_per_node or res.tasks_per_node or 1
