"""The SLURM layer without a cluster: the resources dataclass and its defaults, the submitit parameters made
from it, misspelt parameters, the errors of a machine that cannot submit, and squeue-based job status."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtrain.cluster import executor
from medtrain.cluster.jobs import SlurmJob, job_is_live, slurm_state
from medtrain.cluster.resources import FINETUNE, PRETRAIN, SlurmResources
from medtrain.config import build_config
from medtrain.errors import UserError


def test_defaults_fill_only_what_was_left_none() -> None:
    assert SlurmResources().with_defaults(PRETRAIN).signal_delay_s == 300
    assert SlurmResources().with_defaults(PRETRAIN).max_timeouts == 10
    res = SlurmResources(signal_delay_s=30, cpus_per_task=4).with_defaults(FINETUNE)
    assert (res.signal_delay_s, res.max_timeouts, res.cpus_per_task) == (30, 3, 4)


@pytest.mark.parametrize("data, message", [
    ({"nodes": 0}, "must be >= 1"), ({"gpus_per_task": -1}, "must be >= 0"), ({"mem_gb": 0}, "mem_gb must be > 0"),
    ({"time_min": "long"}, "time_min: expected an integer"), ({"nodez": 2}, "did you mean nodes?"),
])
def test_bad_resources_are_user_errors(data: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_config(SlurmResources, data)


def test_parameters_share_fields_and_merge_lists() -> None:
    res = SlurmResources(partition="gpu", time_min=90, cpus_per_task=4, mem_gb=8, signal_delay_s=120,
                         extra={"exclude": "node07", "setup": ["module load cuda"], "srun_args": ["--mpi=none"]})
    params = executor.parameters(res, "job", srun_args=["--kill-on-bad-exit=1"], slurm_array_parallelism=2)
    assert params == {
        "name": "job", "timeout_min": 90, "cpus_per_task": 4, "mem_gb": 8, "slurm_partition": "gpu",
        "slurm_signal_delay_s": 120, "slurm_array_parallelism": 2, "slurm_exclude": "node07",
        "slurm_setup": ["export SRUN_CPUS_PER_TASK=4", "module load cuda"],
        "slurm_srun_args": ["--kill-on-bad-exit=1", "--mpi=none"]}
    assert "slurm_setup" not in executor.parameters(SlurmResources(), "job")


def test_extra_parameters_are_checked_before_submitting(tmp_path: Path) -> None:
    executor.check_extra({"exclude": "n1", "exclusive": True, "dependency": "afterok:1"})
    with pytest.raises(UserError, match=r"^slurm.extra.exlude: unknown SLURM parameter; did you mean exclude or "
                                        r"exclusive\? valid SLURM parameters: additional_parameters, "):
        executor.check_extra({"exlude": "n1"})
    with pytest.raises(UserError, match="slurm.extra.time: set by slurm.time_min itself") as raised:
        executor.check_extra({"time": 5}, tmp_path / "g.yaml", {"slurm.extra.time": 7})
    assert raised.value.line == 7


def test_a_machine_without_srun_is_told_to_use_a_login_node(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="run on a login node, or set executor: local$"):
        executor.submit(tmp_path / "logs", {"name": "x"}, 3, [print], local_hint=", or set executor: local")


def test_job_states_from_squeue_records() -> None:
    assert not job_is_live(None)  # never submitted: no squeue call
    assert slurm_state(SlurmJob("PENDING", 1, "BeginTime")) == "requeued"
    assert slurm_state(SlurmJob("COMPLETING", 0, "None")) == "running"
    assert slurm_state(SlurmJob("TIMEOUT", 0, "None")) is None


def test_only_the_slurm_layer_imports_submitit() -> None:
    root = Path(__file__).parents[2]
    sources = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
               for folder in ("medtrain", "benchmarks", "launchers") for p in (root / folder).rglob("*.py")}
    users = [path for path, text in sources.items() if "import submitit" in text or "from submitit" in text]
    assert users and all(path.startswith("medtrain/cluster/") for path in users), users
