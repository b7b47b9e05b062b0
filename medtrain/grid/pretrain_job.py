"""One pretraining run as one multi-node SLURM job, submitted through submitit.

    submission = submit_pretrain("pretrain.yaml", ["train.max_steps=20000"], nodes=2, gpus_per_node=4,
                                 partition="gpu", time_min=24 * 60)

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
import difflib
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from medtrain.config import load_config, resolve_config_path
from medtrain.errors import UserError
from medtrain.pretrain import PretrainConfig, train

JOB_NAME = "medtrain-pretrain"
# Finishing the current step plus saving mBERT with its optimizer state to shared storage takes a minute or
# two; SLURM may also send the signal up to a minute early or late.
SIGNAL_DELAY_S = 300
SUBMITIT_SIGNAL = signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]


def run_finished(output_dir: Path) -> bool:
    """The run exported its model after its last checkpoint (an export left by an earlier, shorter run of
    the same output_dir is older than the checkpoints written since)."""
    export, latest = output_dir / "export", output_dir / "checkpoints" / "latest"
    return export.is_dir() and (not latest.exists() or export.stat().st_mtime_ns > latest.stat().st_mtime_ns)


def _job_running(job_id: str) -> bool:
    state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60)
    return state.stdout.strip() == "RUNNING"


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
        if _job_running(env.job_id):
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


def submit_pretrain(
    config: str | Path,
    overrides: Sequence[str] = (),
    *,
    nodes: int = 1,
    gpus_per_node: int = 0,
    tasks_per_node: int | None = None,
    partition: str | None = None,
    time_min: int = 60,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    account: str | None = None,
    qos: str | None = None,
    constraint: str | None = None,
    slurm: Mapping[str, Any] | None = None,
    folder: str | Path | None = None,
    signal_delay_s: int = SIGNAL_DELAY_S,
    max_timeouts: int = 10,
) -> Submission:
    """Submit one pretraining run as one SLURM job of nodes x tasks_per_node ranks; returns at once.

    gpus_per_node > 0 starts one rank per GPU; gpus_per_node = 0 starts tasks_per_node CPU ranks per node.
    `slurm` holds further submitit SLURM parameters (sbatch options with underscores, e.g. exclude=node7).
    The config is validated here, on the login node, so a typo fails now rather than in the queue.
    Logs go to `folder` (default OUTPUT_DIR/slurm). max_timeouts: requeues after a time limit before giving up.
    """
    config_path = resolve_config_path(config).resolve()
    cfg = load_config(PretrainConfig, config_path, list(overrides))
    ranks_per_node = _ranks_per_node(nodes, gpus_per_node, tasks_per_node)
    output_dir = cfg.output_dir.resolve()
    log_folder = Path(folder).resolve() if folder is not None else output_dir / "slurm"
    parameters = {
        "name": JOB_NAME, "nodes": nodes, "tasks_per_node": ranks_per_node, "timeout_min": time_min,
        "gpus_per_node": gpus_per_node or None, "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
        "slurm_partition": partition, "slurm_account": account, "slurm_qos": qos, "slurm_constraint": constraint,
        "slurm_signal_delay_s": signal_delay_s,
        # SLURM 22.05 and 23.02: srun no longer inherits --cpus-per-task from the job; DataLoader workers need it.
        "slurm_setup": [f"export SRUN_CPUS_PER_TASK={cpus_per_task}"] if cpus_per_task else None,
        # A rank that dies would leave the others waiting in a collective until NCCL's timeout.
        "slurm_srun_args": ["--kill-on-bad-exit=1"],
        **{f"slurm_{key}": value for key, value in (slurm or {}).items()},
    }
    executor = _executor(log_folder, max_timeouts)
    _update_parameters(executor, parameters, slurm or {})
    try:
        job = executor.submit(PretrainTask(config_path, tuple(overrides)))
    except (FailedJobError, FailedSubmissionError) as exc:
        raise UserError(f"sbatch refused the job: {exc}") from None
    return Submission(job.job_id, output_dir, log_folder, nodes * ranks_per_node)


def _ranks_per_node(nodes: int, gpus_per_node: int, tasks_per_node: int | None) -> int:
    """One rank per GPU; without GPUs, tasks_per_node CPU ranks (default 1)."""
    if nodes < 1 or gpus_per_node < 0 or (tasks_per_node is not None and tasks_per_node < 1):
        raise UserError("nodes and tasks_per_node must be >= 1 and gpus_per_node >= 0")
    if gpus_per_node and tasks_per_node not in (None, gpus_per_node):
        raise UserError(f"tasks_per_node={tasks_per_node} with gpus_per_node={gpus_per_node}: with GPUs there is "
                        "one rank per GPU, so leave tasks_per_node out")
    return gpus_per_node or tasks_per_node or 1


def _executor(folder: Path, max_timeouts: int) -> submitit.AutoExecutor:
    try:
        return submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_timeouts)
    except RuntimeError as exc:  # submitit: 'Could not detect "srun"'
        raise UserError(f"cannot submit to SLURM from this machine ({exc}): run on a login node") from None


def _update_parameters(executor: submitit.AutoExecutor, parameters: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """submitit's NameError for an unknown name becomes a UserError naming the closest valid ones."""
    try:
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    except NameError:
        valid = sorted(submitit.SlurmExecutor._valid_parameters())
        unknown = sorted(set(extra) - set(valid) - submitit.AutoExecutor._valid_parameters())
        hints = [f"{name} (did you mean {' or '.join(close)}?)" if (close := difflib.get_close_matches(name, valid))
                 else name for name in unknown]
        raise UserError(f"unknown SLURM parameter {', '.join(hints)}; valid names: {', '.join(valid)}") from None
