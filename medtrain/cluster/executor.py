"""The one place that makes a submitit SLURM executor from `SlurmResources` and turns submitit's errors into
one-line UserErrors: no srun here (not a login node), sbatch refusing the job, a misspelt SLURM parameter.
Grid arrays and pretraining jobs both submit through `submit()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from medtrain.cluster.jobs import traceback_reason
from medtrain.cluster.resources import SlurmResources
from medtrain.config import unknown_key_message
from medtrain.errors import UserError

OWNED = {"partition": "partition", "time": "time_min", "cpus_per_task": "cpus_per_task", "mem": "mem_gb",
         "gpus_per_task": "gpus_per_task", "gpus_per_node": "gpus_per_node", "num_gpus": "gpus_per_node",
         "nodes": "nodes", "ntasks_per_node": "tasks_per_node", "account": "account", "qos": "qos",
         "constraint": "constraint", "signal_delay_s": "signal_delay_s", "job_name": "(the job's name)",
         "array_parallelism": "array_parallelism"}
"""submitit SLURM parameters that SlurmResources' own fields set -> the field that sets it."""
MERGED = ("setup", "srun_args")
"""Lists that extra adds to, after medtrain's own lines."""


def valid_extra() -> list[str]:
    return sorted(set(submitit.SlurmExecutor._valid_parameters()) - set(OWNED))


def check_extra(extra: Mapping[str, Any], source: Path | None = None, lines: Mapping[str, int] | None = None,
                prefix: str = "slurm.extra") -> None:
    """A misspelt or field-owned SLURM parameter is one error naming the fix, before anything is submitted."""
    valid = valid_extra()
    for name in extra:
        where = (f"{prefix}.{name}", source, (lines or {}).get(f"{prefix}.{name}"))
        if name in OWNED:
            raise UserError(f"{where[0]}: set by slurm.{OWNED[name]} itself", *where[1:])
        if name not in valid:
            raise UserError(f"{where[0]}: {unknown_key_message(name, valid, 'SLURM parameter')}", *where[1:])


def parameters(res: SlurmResources, name: str, **kind: Any) -> dict[str, Any]:
    """submitit AutoExecutor parameters: the shared fields, the job kind's own (`kind`), then `extra`."""
    extra = dict(res.extra)
    merged = {key: list(kind.pop(key, None) or []) + list(extra.pop(key, None) or []) for key in MERGED}
    if res.cpus_per_task:  # SLURM 22.05+: srun no longer passes the job's --cpus-per-task on to the step
        merged["setup"].insert(0, f"export SRUN_CPUS_PER_TASK={res.cpus_per_task}")
    out = {"name": name, "timeout_min": res.time_min, "cpus_per_task": res.cpus_per_task, "mem_gb": res.mem_gb,
           "slurm_partition": res.partition, "slurm_account": res.account, "slurm_qos": res.qos,
           "slurm_constraint": res.constraint, "slurm_signal_delay_s": res.signal_delay_s, **kind,
           **{f"slurm_{key}": value or None for key, value in merged.items()},
           **{f"slurm_{key}": value for key, value in extra.items()}}
    return {key: value for key, value in out.items() if value is not None}


def submit(folder: Path, params: Mapping[str, Any], max_timeouts: int, tasks: Sequence[Callable[[], Any]],
           local_hint: str = "") -> list[submitit.Job]:
    """Queue `tasks` (several: one job array; one: a plain job) with logs in `folder`; returns at once."""
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_timeouts)
    except RuntimeError as exc:  # submitit: 'Could not detect "srun"'
        raise UserError(f"cannot submit to SLURM from this machine ({exc}): run on a login node{local_hint}") \
            from None
    try:
        executor.update_parameters(**params)
    except NameError:  # check_extra catches these earlier; a name that this submitit version refuses
        auto, slurm = submitit.AutoExecutor._valid_parameters(), submitit.SlurmExecutor._valid_parameters()
        name = next((key.removeprefix("slurm_") for key in params
                     if key not in auto and key.removeprefix("slurm_") not in slurm), "slurm")
        raise UserError(f"{name}: {unknown_key_message(name, valid_extra(), 'SLURM parameter')}") from None
    try:
        return executor.submit_array(list(tasks))
    except (FailedJobError, FailedSubmissionError) as exc:
        raise UserError(f"sbatch refused the job: {traceback_reason(str(exc))}") from None
