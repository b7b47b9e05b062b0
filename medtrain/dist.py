"""Who am I: this process's place in a distributed run, whichever launcher started it.

The one module that reads launcher environment variables. `discover()` turns them into a `DistInfo`:

- "deepspeed" / "torchrun": RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun also sets
  TORCHELASTIC_RUN_ID, which is how the two are told apart). Checked first: these launchers may themselves
  run inside an MPI or SLURM job.
- "mpi": `mpirun` (OpenMPI's OMPI_COMM_WORLD_* variables, or MPICH/Intel MPI hydra's PMI_RANK, PMI_SIZE and
  MPI_LOCALRANKID). Rank 0 sends its host name and a free port to every rank through mpi4py.
- "slurm": a task of an `srun` job step (SLURM_PROCID, SLURM_LOCALID, ...). The master is the first host of
  the step's node list, its port derived from SLURM_JOB_ID so concurrent jobs on a node differ. A batch
  script that runs python without srun is one process: rank 0 of 1.
- "single": no launcher, rank 0 of 1.

`export_torch_env()` writes a DistInfo back as the torch variables, so that `medtrain.engine.init_process_group`
takes the same env:// path whichever launcher started the run. Nothing here imports torch or DeepSpeed.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from medtrain.errors import UserError
from medtrain.io import free_port

# srun steps get 20000 + job id % 10000: below Linux's ephemeral range (32768+), so no random clash.
SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 10000
LOCALHOST = "127.0.0.1"

# Rank 0's (address, port), delivered to every rank; under MPI by default mpi4py's broadcast.
Broadcast = Callable[[tuple[str, int]], tuple[str, int]]


@dataclass(frozen=True)
class DistInfo:
    """This process's rank, its peers, and where rank 0 listens for the rendezvous."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, TensorBoard and results."""
        return self.rank == 0

    def rendezvous(self) -> str:
        """`host (address):port`, the address as this host resolves it: what a multi-node log must show, since a
        host name that resolves to a loopback address on rank 0's node would leave the other nodes waiting."""
        try:
            address = socket.gethostbyname(self.master_addr)
        except OSError:
            address = "unresolved"
        shown = self.master_addr if address == self.master_addr else f"{self.master_addr} ({address})"
        return f"{shown}:{self.master_port}"


# How a collective reports a peer that died or stopped answering: gloo's and NCCL's own words.
_PEER_LOSS = ("connection closed by peer", "connection reset by peer", "timed out", "timeout", "broken pipe")


def peer_loss(error: BaseException) -> str | None:
    """The first line of `error` when it says a collective lost a peer (it died, or did not answer within the
    collective timeout), else None. torch raises these as plain RuntimeError (gloo) or DistError subclasses."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    names = {cls.__name__ for cls in type(error).__mro__}
    if "DistError" in names or any(marker in text.lower() for marker in _PEER_LOSS):
        return first
    return None


def discover(env: Mapping[str, str] | None = None, bcast: Broadcast | None = None) -> DistInfo:
    """Read the launcher's variables from `env` (default os.environ); malformed values raise UserError.

    Pure except under MPI, where rank 0's address reaches the others through `bcast` (default mpi4py),
    unless MASTER_ADDR and MASTER_PORT are both set. After export_torch_env() it reads the exported torch
    variables, so a second call needs no MPI (its launcher then reads "deepspeed").
    """
    env = os.environ if env is None else env
    if "RANK" in env:
        return _from_torch_env(env)
    if "OMPI_COMM_WORLD_RANK" in env or ("PMI_RANK" in env and "MPI_LOCALRANKID" in env):
        return _from_mpi(env, bcast or _mpi_bcast)
    if "SLURM_STEP_ID" in env:
        return _from_srun(env)
    # A batch script (SLURM_JOB_ID but no job step) or no launcher at all: one process.
    return DistInfo(0, 0, 1, 1, LOCALHOST, _master_port(env, 1), "slurm" if "SLURM_JOB_ID" in env else "single")


def slurm_threads(env: Mapping[str, str] | None = None) -> int | None:
    """Threads for a rank that srun started: SLURM_CPUS_PER_TASK, else the CPUs this process may run on. None
    where the user set OMP_NUM_THREADS (torch follows it) or srun did not start the process. Left alone, torch
    starts a thread per core of the whole node and ranks sharing a node spin-wait on one another: 150 steps of
    the demo's pretraining under `srun -n2 --cpus-per-task=1` took 56 s, and 15 s with one thread per rank."""
    env = os.environ if env is None else env
    if "SLURM_STEP_ID" not in env or "OMP_NUM_THREADS" in env:
        return None
    if "SLURM_CPUS_PER_TASK" in env:
        return max(1, _int(env, "SLURM_CPUS_PER_TASK"))
    return len(os.sched_getaffinity(0))


def use_slurm_threads() -> int | None:
    """Apply slurm_threads() to torch and to OpenMP in processes this one starts (loader workers); returns it."""
    threads = slurm_threads()
    if threads is not None:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    return threads


def export_torch_env(info: DistInfo) -> None:
    """Set the variables torch's env:// rendezvous (and DeepSpeed's CPU shared-memory ops) read."""
    os.environ.update(
        RANK=str(info.rank),
        LOCAL_RANK=str(info.local_rank),
        WORLD_SIZE=str(info.world_size),
        LOCAL_WORLD_SIZE=str(info.local_world_size),
        LOCAL_SIZE=str(info.local_world_size),  # DeepSpeed's name: all ranks on one host -> shm all-reduce
        MASTER_ADDR=info.master_addr,
        MASTER_PORT=str(info.master_port),
    )


def _from_torch_env(env: Mapping[str, str]) -> DistInfo:
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", _name(env, "LOCAL_WORLD_SIZE", "LOCAL_SIZE"))
    rank, world_size = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    # Without the local variables, assume one node (what a hand-set RANK/WORLD_SIZE usually means).
    local_rank = _int(env, "LOCAL_RANK", default=rank)
    local_world_size = _int(env, names[3], default=world_size)
    _check_ranks(names, rank, local_rank, world_size, local_world_size)
    return DistInfo(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        local_world_size=local_world_size,
        master_addr=_master_addr(env, world_size),
        master_port=_master_port(env, world_size),
        launcher="torchrun" if "TORCHELASTIC_RUN_ID" in env else "deepspeed",
    )


def _from_mpi(env: Mapping[str, str], bcast: Broadcast) -> DistInfo:
    names = (
        _name(env, "OMPI_COMM_WORLD_RANK", "PMI_RANK"),
        _name(env, "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"),
        _name(env, "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"),
        _name(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"),
    )
    rank, local_rank, world_size, local_world_size = (_int(env, name) for name in names)
    _check_ranks(names, rank, local_rank, world_size, local_world_size)
    if "MASTER_ADDR" in env and "MASTER_PORT" in env:
        master = (env["MASTER_ADDR"], _port(env))
    else:
        # Every rank proposes; only rank 0's proposal (its host, a port free there) is kept.
        host = LOCALHOST if world_size == local_world_size else socket.gethostname()
        master = bcast((host, _port(env) if "MASTER_PORT" in env else free_port()))
    return DistInfo(rank, local_rank, world_size, local_world_size, master[0], master[1], "mpi")


def _mpi_bcast(proposal: tuple[str, int]) -> tuple[str, int]:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise UserError("running under mpirun needs mpi4py (pip install mpi4py)") from e
    return MPI.COMM_WORLD.bcast(proposal, root=0)


def _from_srun(env: Mapping[str, str]) -> DistInfo:
    """A task of an srun step; the step's variables win over the job's (a step may use part of the job)."""
    tasks = _name(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
    per_node = _name(env, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE")
    names = ("SLURM_PROCID", "SLURM_LOCALID", tasks, per_node)
    rank, local_rank, world_size = (_int(env, name) for name in names[:3])
    local_world_size = _tasks_on_this_node(env, per_node)
    _check_ranks(names, rank, local_rank, world_size, local_world_size)
    nodelist = _name(env, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    hosts = expand_nodelist(_str(env, nodelist), nodelist)
    # The step's first host runs task 0 (block distribution, SLURM's default).
    default_addr = LOCALHOST if len(hosts) == 1 else hosts[0]
    job_port = SLURM_PORT_BASE + _int(env, "SLURM_JOB_ID") % SLURM_PORT_SPAN
    return DistInfo(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        local_world_size=local_world_size,
        master_addr=env.get("MASTER_ADDR", default_addr),
        master_port=_port(env) if "MASTER_PORT" in env else job_port,
        launcher="slurm",
    )


def _tasks_on_this_node(env: Mapping[str, str], var: str) -> int:
    """This node's entry, by SLURM_NODEID, in a per-node task count list such as `2(x3),1`."""
    counts: list[int] = []
    for item in _str(env, var).split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if m is None:
            raise UserError(f"{var}={env[var]!r} is not a task count list like '2(x3),1'")
        counts += [int(m[1])] * int(m[2] or 1)
    node = _int(env, "SLURM_NODEID", default=0)
    if node >= len(counts):
        raise UserError(f"SLURM_NODEID={node} but {var}={env[var]!r} lists {len(counts)} nodes")
    return counts[node]


def expand_nodelist(nodelist: str, var: str = "SLURM_JOB_NODELIST") -> list[str]:
    """SLURM's compact host list as host names: `node[01-03,07]`, `a1,b2`, `gpu-[1-2]`, `r[1-2]n[1-2]`."""
    hosts: list[str] = []
    for item in _split_top_level(nodelist, var):
        hosts += _expand_host(item, nodelist, var)
    return hosts


def _split_top_level(nodelist: str, var: str) -> list[str]:
    """Split at commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth not in (0, 1):
            raise UserError(f"{var}={nodelist!r}: unbalanced brackets")
        if ch == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    if depth != 0:
        raise UserError(f"{var}={nodelist!r}: unbalanced brackets")
    items.append(nodelist[start:])
    if any(not item for item in items):
        raise UserError(f"{var}={nodelist!r}: empty host name")
    return items


def _expand_host(item: str, nodelist: str, var: str) -> list[str]:
    """Expand the first bracket group, then the rest recursively (cartesian product)."""
    m = re.fullmatch(r"([^\[\]]*)\[([^\[\]]*)\](.*)", item)
    if m is None:
        return [item]
    prefix, ranges, rest = m.groups()
    tails = _expand_host(rest, nodelist, var) if rest else [""]
    return [prefix + number + tail for number in _expand_ranges(ranges, nodelist, var) for tail in tails]


def _expand_ranges(ranges: str, nodelist: str, var: str) -> list[str]:
    """`01-03,07` -> 01 02 03 07: zero padding follows the range's first number."""
    numbers: list[str] = []
    for part in ranges.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None or (m[2] is not None and int(m[2]) < int(m[1])):
            raise UserError(f"{var}={nodelist!r}: bad range {part!r}")
        width = len(m[1])
        numbers += [str(n).zfill(width) for n in range(int(m[1]), int(m[2] or m[1]) + 1)]
    return numbers


def _master_addr(env: Mapping[str, str], world_size: int) -> str:
    if "MASTER_ADDR" in env:
        return env["MASTER_ADDR"]
    if world_size > 1:
        raise UserError("MASTER_ADDR is not set: the launcher must name rank 0's host when WORLD_SIZE > 1")
    return LOCALHOST


def _master_port(env: Mapping[str, str], world_size: int) -> int:
    """MASTER_PORT if set; a lone process takes any free port, so concurrent single runs never clash."""
    if "MASTER_PORT" in env:
        return _port(env)
    if world_size > 1:
        raise UserError("MASTER_PORT is not set: the launcher must name rank 0's port when WORLD_SIZE > 1")
    return free_port()


def _port(env: Mapping[str, str]) -> int:
    port = _int(env, "MASTER_PORT")
    if not 0 < port < 65536:
        raise UserError(f"MASTER_PORT={port} is not a TCP port (1-65535)")
    return port


def _name(env: Mapping[str, str], *names: str) -> str:
    """The first of `names` that is set, else the first (so a missing variable is reported by its main name)."""
    return next((name for name in names if name in env), names[0])


def _str(env: Mapping[str, str], name: str) -> str:
    if name not in env:
        raise UserError(f"{name} is not set")
    return env[name]


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    """`name` as a non-negative integer (or `default` when unset); UserError names the variable."""
    if name not in env and default is not None:
        return default
    value = _str(env, name)
    if re.fullmatch(r"\s*[0-9]+\s*", value) is None:
        raise UserError(f"{name}={value!r} is not a non-negative integer")
    return int(value)


def _check_ranks(names: tuple[str, str, str, str], rank: int, local_rank: int, world: int, local_world: int) -> None:
    """Ranks inside their worlds; `names` are the variables read, so the message points at the right one."""
    rank_var, local_rank_var, world_var, local_world_var = names
    if world < 1:
        raise UserError(f"{world_var}={world}: a run needs at least one process")
    if rank >= world:
        raise UserError(f"{rank_var}={rank} is not below {world_var}={world}")
    if not 1 <= local_world <= world:
        raise UserError(f"{local_world_var}={local_world} is not between 1 and {world_var}={world}")
    if local_rank >= local_world:
        raise UserError(f"{local_rank_var}={local_rank} is not below {local_world_var}={local_world}")
