"""medtrain.dist.discover() on launcher environments written out as dicts (what each launcher was seen to set)."""

from __future__ import annotations

import os
import socket

import pytest

from medtrain.dist import (DistInfo, discover, expand_nodelist, export_torch_env, peer_loss, slurm_threads,
                           use_slurm_threads)
from medtrain.errors import UserError

DEEPSPEED = {  # deepspeed --num_gpus 2 on the second of two nodes
    "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_SIZE": "2", "CROSS_RANK": "1", "CROSS_SIZE": "2",
    "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29600",
}
TORCHRUN = {
    "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0",
    "TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
}
OPENMPI = {  # mpirun -np 2 on one host
    "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
}
HYDRA = {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"}  # MPICH / Intel MPI
SRUN = {  # srun -N 2 -n 4: task 3, on the second node
    "SLURM_JOB_ID": "1234", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
    "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_TASKS_PER_NODE": "2(x2)",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_JOB_NODELIST": "gpu-[1-2]", "SLURM_STEP_NODELIST": "gpu-[1-2]",
}
BATCH_SCRIPT = {  # sbatch -n 2: the batch script itself, before any srun
    "SLURM_JOB_ID": "77", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "2",
    "SLURM_TASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "vm",
}


def rank0_says(host: str, port: int):
    """A stand-in for MPI's broadcast: every rank receives rank 0's (host, port); records what was proposed."""
    proposals = []

    def bcast(proposal: tuple[str, int]) -> tuple[str, int]:
        proposals.append(proposal)
        return host, port

    bcast.proposals = proposals
    return bcast


def no_bcast(proposal: tuple[str, int]) -> tuple[str, int]:
    raise AssertionError("no MPI broadcast expected")


def test_no_launcher_is_rank_0_of_1_on_a_free_port():
    info = discover({})
    assert (info.rank, info.world_size, info.launcher, info.master_addr) == (0, 1, "single", "127.0.0.1")
    assert info.is_main and 0 < info.master_port < 65536


def test_deepspeed_launcher():
    assert discover(DEEPSPEED) == DistInfo(3, 1, 4, 2, "10.0.0.1", 29600, "deepspeed")


def test_torchrun_is_told_apart_by_its_elastic_run_id():
    assert discover(TORCHRUN) == DistInfo(1, 1, 2, 2, "127.0.0.1", 29500, "torchrun")


def test_hand_set_rank_assumes_one_node():
    info = discover({"RANK": "0", "WORLD_SIZE": "1"})
    assert (info.rank, info.local_rank, info.world_size, info.local_world_size) == (0, 0, 1, 1)


def test_openmpi_on_one_host_broadcasts_localhost_and_a_port():
    bcast = rank0_says("127.0.0.1", 31000)
    assert discover(OPENMPI, bcast) == DistInfo(1, 1, 2, 2, "127.0.0.1", 31000, "mpi")
    [(host, port)] = bcast.proposals
    assert host == "127.0.0.1" and 0 < port < 65536


def test_mpi_across_hosts_proposes_the_host_name():
    bcast = rank0_says("node01", 31000)
    info = discover(HYDRA, bcast)
    assert info == DistInfo(2, 0, 4, 2, "node01", 31000, "mpi")
    assert bcast.proposals[0][0] == socket.gethostname()


def test_mpi_with_master_set_needs_no_broadcast():
    info = discover({**OPENMPI, "MASTER_ADDR": "head", "MASTER_PORT": "29555"}, no_bcast)
    assert (info.master_addr, info.master_port, info.launcher) == ("head", 29555, "mpi")


def test_srun_master_is_first_host_and_port_follows_job_id():
    assert discover(SRUN, no_bcast) == DistInfo(3, 1, 4, 2, "gpu-1", 20000 + 1234, "slurm")


def test_srun_on_one_node_uses_localhost():
    env = {**SRUN, "SLURM_PROCID": "1", "SLURM_NODEID": "0", "SLURM_STEP_NODELIST": "vm",
           "SLURM_STEP_TASKS_PER_NODE": "4"}
    assert discover(env) == DistInfo(1, 1, 4, 4, "127.0.0.1", 21234, "slurm")


def test_srun_uneven_tasks_per_node():
    env = {**SRUN, "SLURM_PROCID": "3", "SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "3,1"}
    assert discover(env).local_world_size == 1


def test_srun_step_variables_win_over_the_jobs():
    # sbatch -N 2 -n 8, then `srun -N 1 -n 2` on part of the allocation.
    env = {**SRUN, "SLURM_PROCID": "1", "SLURM_NODEID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
           "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "n[1-2]",
           "SLURM_STEP_NODELIST": "n2"}
    assert discover(env) == DistInfo(1, 1, 2, 2, "127.0.0.1", 21234, "slurm")


def test_srun_honours_explicit_master():
    info = discover({**SRUN, "MASTER_ADDR": "gpu-2", "MASTER_PORT": "29999"})
    assert (info.master_addr, info.master_port) == ("gpu-2", 29999)


def test_srun_with_slurm_pmi_plugin_stays_slurm():
    # srun --mpi=pmi2 sets PMI_RANK too, but no MPI_LOCALRANKID: no MPI start-up needed.
    assert discover({**SRUN, "PMI_RANK": "3", "PMI_SIZE": "4"}, no_bcast).launcher == "slurm"


def test_batch_script_without_srun_is_one_process():
    info = discover(BATCH_SCRIPT)
    assert (info.rank, info.world_size, info.local_world_size, info.launcher) == (0, 1, 1, "slurm")


@pytest.mark.parametrize(
    ("env", "launcher"),
    [
        ({**SRUN, **OPENMPI, **DEEPSPEED}, "deepspeed"),  # deepspeed launcher inside an MPI job inside SLURM
        ({**SRUN, **TORCHRUN}, "torchrun"),  # srun ... torchrun
        ({**BATCH_SCRIPT, **OPENMPI}, "mpi"),  # mpirun inside an sbatch script
    ],
)
def test_precedence_torch_then_mpi_then_slurm(env, launcher):
    assert discover(env, rank0_says("127.0.0.1", 31000)).launcher == launcher


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("a1,b2", ["a1", "b2"]),
        ("gpu-[1-2]", ["gpu-1", "gpu-2"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("a[1-2],b[3-4],c", ["a1", "a2", "b3", "b4", "c"]),
        ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
        ("vm", ["vm"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["node[01-03", "node]1[", "node[3-1]", "node[a-b]", "a,,b", "n[[1]]", ""])
def test_bad_nodelist_names_the_variable(nodelist):
    with pytest.raises(UserError, match="SLURM_STEP_NODELIST"):
        discover({**SRUN, "SLURM_STEP_NODELIST": nodelist})


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({**SRUN, "SLURM_PROCID": "x"}, "SLURM_PROCID='x'"),
        ({**SRUN, "SLURM_PROCID": "-1"}, "SLURM_PROCID='-1'"),
        ({**SRUN, "SLURM_PROCID": "4"}, "SLURM_PROCID=4 is not below SLURM_STEP_NUM_TASKS=4"),
        ({**SRUN, "SLURM_LOCALID": "2"}, "SLURM_LOCALID=2"),
        ({**SRUN, "SLURM_NODEID": "2"}, "SLURM_NODEID=2"),
        ({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "2(y2)"}, "SLURM_STEP_TASKS_PER_NODE"),
        ({key: v for key, v in SRUN.items() if key != "SLURM_PROCID"}, "SLURM_PROCID is not set"),
        ({**DEEPSPEED, "RANK": "4"}, "RANK=4 is not below WORLD_SIZE=4"),
        ({**DEEPSPEED, "WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
        ({**DEEPSPEED, "LOCAL_SIZE": "8"}, "LOCAL_SIZE=8"),
        ({**DEEPSPEED, "MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
        ({key: v for key, v in DEEPSPEED.items() if key != "MASTER_ADDR"}, "MASTER_ADDR is not set"),
        ({"RANK": "0"}, "WORLD_SIZE is not set"),
        ({**OPENMPI, "OMPI_COMM_WORLD_LOCAL_RANK": "2"}, "OMPI_COMM_WORLD_LOCAL_RANK=2"),
        ({**HYDRA, "PMI_SIZE": "two"}, "PMI_SIZE='two'"),
    ],
)
def test_malformed_env_names_the_variable(env, variable):
    with pytest.raises(UserError) as caught:
        discover(env, rank0_says("127.0.0.1", 31000))
    assert variable in str(caught.value)


def test_export_torch_env_round_trips(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)  # monkeypatch restores them after the test
    info = discover(SRUN)
    export_torch_env(info)
    assert os.environ["MASTER_ADDR"] == "gpu-1" and os.environ["LOCAL_SIZE"] == "2"
    again = discover(os.environ, no_bcast)
    assert again == DistInfo(3, 1, 4, 2, "gpu-1", 21234, "deepspeed")


@pytest.mark.parametrize("env, threads", [
    ({**SRUN, "SLURM_CPUS_PER_TASK": "3"}, 3),
    ({**SRUN, "SLURM_CPUS_PER_TASK": "3", "OMP_NUM_THREADS": "2"}, None),  # the user's choice stands
    ({**DEEPSPEED}, None),  # not started by srun
    ({**SRUN}, len(os.sched_getaffinity(0))),  # no --cpus-per-task: the CPUs SLURM bound the task to
])
def test_a_rank_started_by_srun_uses_the_cpus_slurm_gave_it(env, threads):
    assert slurm_threads(env) == threads


def test_use_slurm_threads_sets_torch_and_openmp(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for name, value in {**SRUN, "SLURM_CPUS_PER_TASK": "1"}.items():
        monkeypatch.setenv(name, value)
    try:
        assert use_slurm_threads() == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_rendezvous_shows_the_address_the_host_name_resolves_to() -> None:
    host = socket.gethostname()
    info = DistInfo(rank=0, local_rank=0, world_size=2, local_world_size=1, master_addr=host, master_port=20001,
                    launcher="slurm")
    assert info.rendezvous() == f"{host} ({socket.gethostbyname(host)}):20001"
    numeric = DistInfo(rank=0, local_rank=0, world_size=2, local_world_size=1, master_addr="10.1.2.3",
                       master_port=29500, launcher="deepspeed")
    assert numeric.rendezvous() == "10.1.2.3:29500"
    unknown = DistInfo(rank=0, local_rank=0, world_size=2, local_world_size=1, master_addr="no-such-host.invalid",
                       master_port=1, launcher="slurm")
    assert unknown.rendezvous() == "no-such-host.invalid (unresolved):1"


class DistError(RuntimeError):
    """Named as torch.distributed.DistError, whose subclasses torch raises for backend failures (peer_loss reads
    class names, so the test needs no process group)."""


class DistBackendError(DistError):
    pass


@pytest.mark.parametrize(("error", "expected"), [
    (RuntimeError("[pair.cc:553] Connection closed by peer [10.0.0.2]:9864. This is typically caused by ...\nmore"),
     "[pair.cc:553] Connection closed by peer [10.0.0.2]:9864. This is typically caused by ..."),
    (RuntimeError("[pair.cc:537] Read error [10.0.0.2]:34525: Connection reset by peer."),
     "[pair.cc:537] Read error [10.0.0.2]:34525: Connection reset by peer."),
    (RuntimeError("[unbound_buffer.cc:81] Timed out waiting 60000ms for recv operation to complete"),
     "[unbound_buffer.cc:81] Timed out waiting 60000ms for recv operation to complete"),
    (DistBackendError("NCCL communicator was aborted on rank 1."), "NCCL communicator was aborted on rank 1."),
    (DistBackendError(""), "DistBackendError"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x32 and 64x2)"), None),
    (RuntimeError(""), None),
])
def test_peer_loss_tells_a_lost_peer_from_a_bug(error: BaseException, expected: str | None) -> None:
    assert peer_loss(error) == expected
