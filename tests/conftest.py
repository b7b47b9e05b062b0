"""Suite-wide fixtures for tests that need real infrastructure: a local SLURM cluster and MPI.

Where SLURM or MPI cannot start, a test skips with the reason; under CI=true (.ci/run) it fails instead,
because there the Makefile has installed everything and a skip would hide a broken set-up.
Tests using these fixtures are marked `integration` automatically (select them out with -m "not integration").
Fixtures for particular test areas live in tests/unit/conftest.py and tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

# One thread per process, for this process and everything the tests start (recipes, SLURM jobs, benchmark rows):
# two pytest-xdist workers on 2 cores each start processes, so a second thread per process only competes for a
# core. Alone on the machine, the screening recipe's one-epoch run takes 31 CPU-s (19 s) with 2 threads and 25
# CPU-s (25 s) with 1: less work, which is what a fully loaded machine pays for. Code under test that picks its
# threads itself (torch.set_num_threads from a SLURM task's CPUs) still does.
os.environ.setdefault("OMP_NUM_THREADS", "1")

CLUSTER_SCRIPTS = Path(__file__).parent / "cluster"
INFRA_FIXTURES = {"slurm_cluster", "two_host_cluster", "mpirun"}
START_TIMEOUT_S = 120
DEMO_STUDY_FIXTURE = "demo"  # tests/integration/conftest.py: the demo-size study, laid out as `make demo` lays it out
DEMO_STUDY_GROUP = "demo-study"
# Modules that take longest (measured), longest first: started early, they overlap with the rest.
LONG_MODULES = ("test_grid_slurm", "test_gpu_check", "test_slurm_pretrain", "test_two_hosts", "test_pretrain",
                "test_finetune", "test_launchers")


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true where the infrastructure must be there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", name="unavailable")
def unavailable_fixture() -> Callable[[str], NoReturn]:
    """`unavailable(reason)` for tests that find a requirement missing themselves."""
    return unavailable


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster: clients find it through SLURM_CONF (set in os.environ while it is in use)."""

    conf: Path
    partition: str
    state_dir: Path

    def host(self, action: str, node: str) -> None:
        """`kill` (a power cut: slurmd and every job process on the host) or `start` a multi-host cluster's host."""
        subprocess.run(["bash", str(CLUSTER_SCRIPTS / "slurm_node.sh"), str(self.state_dir), action, node],
                       capture_output=True, text=True, timeout=60, check=True)

    def address(self, node: str) -> str:
        """A multi-host cluster's node address, as its hosts file gives it."""
        for line in (self.state_dir / "hosts").read_text().splitlines():
            address, *names = line.split()
            if node in names:
                return address
        raise KeyError(node)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start a one-node SLURM cluster (tests/cluster/slurm_up.sh) for the session; always stop it."""
    yield from _cluster(hosts=1)


@pytest.fixture(scope="module")
def two_host_cluster() -> Iterator[SlurmCluster]:
    """Two SLURM hosts n1 and n2 on this machine (network namespaces on a bridge), for one test module.

    Module scope: while it runs it is SLURM_CONF, so a worker's one-node cluster is back for the next module."""
    yield from _cluster(hosts=2)


def _cluster(hosts: int) -> Iterator[SlurmCluster]:
    if shutil.which("slurmctld") is None:
        unavailable("SLURM is not installed (tests/cluster/system_packages.sh installs it)")
    # Not pytest's tmp_path: munged (user munge) must reach its socket, and pytest's folders are root-only.
    state_dir = Path(tempfile.mkdtemp(prefix="medtrain-slurm-"))
    try:
        up = subprocess.run(["bash", str(CLUSTER_SCRIPTS / "slurm_up.sh"), str(state_dir), str(hosts)],
                            capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _slurm_down(state_dir)
        unavailable(f"local SLURM cluster ({hosts} host(s)) did not start within {START_TIMEOUT_S}s")
    if up.returncode != 0:
        shutil.rmtree(state_dir, ignore_errors=True)
        unavailable(f"local SLURM cluster ({hosts} host(s)) did not start:\n{up.stderr.strip()}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state_dir / "slurm.conf")
    try:
        yield SlurmCluster(conf=state_dir / "slurm.conf", partition="debug", state_dir=state_dir)
    finally:
        _restore_env("SLURM_CONF", previous)
        _slurm_down(state_dir)


def _slurm_down(state_dir: Path) -> None:
    subprocess.run(["bash", str(CLUSTER_SCRIPTS / "slurm_down.sh"), str(state_dir)], timeout=60, check=False)
    shutil.rmtree(state_dir, ignore_errors=True)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@pytest.fixture(scope="session")
def mpirun() -> list[str]:
    """The `mpirun` command prefix (root-safe, oversubscribing the 2-core test machines), checked to run."""
    if shutil.which("mpirun") is None:
        unavailable("mpirun is not installed (tests/cluster/system_packages.sh installs OpenMPI)")
    command = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
    try:
        probe = subprocess.run([*command, "-np", "2", "true"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        unavailable("`mpirun -np 2 true` did not finish within 60s")
    if probe.returncode != 0:
        unavailable(f"`mpirun -np 2 true` failed:\n{(probe.stdout + probe.stderr).strip()}")
    return command


def pytest_itemcollected(item: pytest.Item) -> None:
    """Tests that start real clusters or MPI jobs are integration tests, whether or not they say so.

    For `make test`'s two pytest-xdist workers (`--dist loadgroup`): a module's tests stay on one worker, so
    its module fixtures are built once, and every test on the demo-size study shares one group, so the study
    runs once. (Marked here, as each test is collected: xdist reads the groups in its own
    pytest_collection_modifyitems.)
    """
    fixtures = set(getattr(item, "fixturenames", ()))
    if INFRA_FIXTURES & fixtures:
        item.add_marker(pytest.mark.integration)
    item.add_marker(pytest.mark.xdist_group(DEMO_STUDY_GROUP if DEMO_STUDY_FIXTURE in fixtures else item.path.stem))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest groups first (the study, then the SLURM tests that mostly wait on the scheduler), so the
    short ones fill in around them on the other worker."""
    items.sort(key=_start_rank)  # stable: collection order within a rank


def _start_rank(item: pytest.Item) -> int:
    if DEMO_STUDY_FIXTURE in getattr(item, "fixturenames", ()):
        return 0
    return LONG_MODULES.index(item.path.stem) + 1 if item.path.stem in LONG_MODULES else len(LONG_MODULES) + 1
