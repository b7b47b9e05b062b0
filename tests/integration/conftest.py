"""Fixtures for integration tests: made once per session, the bundled sample data and packed shards, and the
demo-size study as `make demo` runs it; per test, the SLURM jobs to cancel afterwards."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from medtrain.config import load_config, read_yaml, resolve_config_path
from medtrain.data.pack import PrepareConfig, prepare
from medtrain.data.sample import write_sample_data
from medtrain.data.split import split_corpus


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`medtrain sample-data` output at the default (test) scale, the Romanian CoNLL-U file split as `make demo`
    splits it (ner/ro/split/, study-demo's path)."""
    out = tmp_path_factory.mktemp("sample") / "data"
    write_sample_data(out, seed=0, scale=1.0)
    split_corpus(out / "ner" / "ro" / "monero.conllu", out / "ner" / "ro" / "split", (0.6, 0.2, 0.2),
                 by="sentence", order="source")
    return out


@pytest.fixture(scope="session")
def sample_shards(sample_data: Path) -> Path:
    """The sample corpora prepared into 64-token shards, through the same config `make demo` uses."""
    out = sample_data.parent / "shards"
    prepare(load_config(PrepareConfig, sample_data / "prepare.yaml", [f"output_dir={out}", "seq_len=64",
                                                                      "num_workers=0"]))
    return out


@pytest.fixture
def jobs() -> Iterator[list[str]]:
    """Job ids to cancel whatever happens, so no job outlives its test."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60, check=False)


# ----------------------------------------------------------------------------- the demo, as `make demo` leaves it

REPO = Path(__file__).resolve().parents[2]
DEMO_RUN_TIMEOUT_S = 2400  # the demo-size study: ~5 min on an idle 2-core machine, several times that when busy


def documented_commands(recipe: str) -> list[list[str]]:
    """The command lines of a packaged recipe's header comment (`#   medtrain ...`, `#   python ...`), split as a
    shell splits them, trailing comments dropped. Tests run these as written, so a comment that drifts from the
    code fails a test."""
    commands = []
    for line in resolve_config_path(recipe).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(("#   medtrain ", "#   python ")):
            commands.append(shlex.split(line[1:], comments=True))
    return commands


@dataclass(frozen=True)
class Demo:
    """A folder laid out as `make demo` leaves the repository root: demo/data, demo/study, and links to the
    repository's ds_configs/ and launchers/, which recipes name relative to the root."""

    root: Path
    study_command: list[str]
    """The study's documented command as the fixture ran it, overrides included."""
    printed: str
    """What the study printed."""

    documented = staticmethod(documented_commands)
    """For the tests: a recipe's documented commands."""
    study_timeout_s = DEMO_RUN_TIMEOUT_S

    @property
    def out(self) -> Path:
        return self.root / "demo" / "study"

    def run(self, command: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
        """A documented command, as a user runs it from the root: `medtrain` and `python` are this venv's. A hang
        is killed with everything it started, and fails the test."""
        program = str(Path(sys.executable).with_name("medtrain")) if command[0] == "medtrain" else sys.executable
        with subprocess.Popen([program, *command[1:]], cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
                pytest.fail(f"{' '.join(command)} did not finish within {timeout}s:\n{(stdout + stderr)[-3000:]}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def check(self, command: list[str], timeout: int = 600) -> str:
        """Run, expect exit 0; returns stdout."""
        result = self.run(command, timeout)
        assert result.returncode == 0, f"{' '.join(command)}:\n{(result.stdout + result.stderr)[-3000:]}"
        return result.stdout


def smaller_study_demo() -> list[str]:
    """Overrides that make study-demo the test's study: the clinical variant only (no biomedical) and each task
    tested in its training languages only; everything else, so the baseline, the clinical model and the
    in-language scores, is the packaged recipe's."""
    study, _ = read_yaml(resolve_config_path("study-demo"))
    overrides = [f"variants={json.dumps({'clinical': study['variants']['clinical']})}"]
    for i, task in enumerate(study["tasks"]):
        overrides.append(f"tasks.{i}.test_languages={json.dumps(task['train_languages'])}")
    return overrides


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """study-demo's documented commands (`make demo`), run as written from a demo root, with the overrides of
    smaller_study_demo(): the one demo-size study of the session, shared by the study and recipe tests."""
    root = tmp_path_factory.mktemp("demo-root")
    for folder in ("ds_configs", "launchers"):
        (root / folder).symlink_to(REPO / folder)
    demo = Demo(root, [], "")
    *data_commands, study = documented_commands("study-demo")  # sample-data, then the Romanian split
    for command in data_commands:
        demo.check(command, timeout=600)
    command = [*study, *smaller_study_demo()]
    result = demo.run(command, timeout=DEMO_RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Loading weights" not in result.stdout + result.stderr  # every load goes through model.load_pretrained
    demo = Demo(root, command, result.stdout)
    # the overrides did what they say: no biomedical variant, in-language test sets only
    assert sorted(p.name for p in (demo.out / "pretrain").iterdir() if p.is_dir()) == ["baseline", "clinical"]
    for run_config in (demo.out / "grid" / "runs").glob("*/config.yaml"):
        data = yaml.safe_load(run_config.read_text(encoding="utf-8"))["data"]
        [language] = data["test"]
        assert f"/{language}/" in str(data["train"]), run_config
    return demo
