"""Grid specs: expansion, signatures, validation that names the fix, and what a (re)submission launches.

No SLURM here: job states are fabricated (squeue's output, jobs.json records, submitit's result pickles)."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from medtrain.config import build_config
from medtrain.errors import UserError
from medtrain.finetune import FinetuneConfig
from medtrain.grid.records import load_jobs, new_record, save_jobs
from medtrain.grid.spec import Run, canonical, expand, load_grid, signature
from medtrain.cluster.jobs import SlurmJob, find_job, parse_squeue
from medtrain.config import config_to_dict
from medtrain.grid.status import (COMPLETED, FAILED, NOT_SUBMITTED, PENDING, REQUEUED, RUNNING, RunStatus,
                                  format_status, grid_status, run_status)
from medtrain.grid.submit import check_inputs, runs_to_launch, submit_grid

BASE = {
    "task": "ner", "model": "models/mbert",
    "data": {"format": "brat", "train": "data/ner/es/train", "dev": "data/ner/es/dev",
             "test": {"es": "data/ner/es/test", "ro": "data/ner/ro/test"}},
    "train": {"epochs": 2, "lr": 3.0e-5},
}


def write_grid(folder: Path, body: dict[str, Any], name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(body, sort_keys=False, default_flow_style=None), encoding="utf-8")
    return path


def grid_body(folder: Path, **extra: Any) -> dict[str, Any]:
    return {"grid_dir": str(folder / "grid"), "base": BASE, **extra}


def finetune_config(data: dict[str, Any]) -> FinetuneConfig:
    return build_config(FinetuneConfig, {"output_dir": "out", **data})


# ----------------------------------------------------------------------------- expansion


def test_axes_make_a_product_crossed_with_each_combination() -> None:
    axes = {"model": ["a", "b"], "train.lr": [1e-5, 2e-5, 3e-5]}
    combos = [{"task": "ner"}, {"task": "screening", "train.epochs": 5}]
    runs = list(expand({"train": {"seed": 0}}, axes, combos))
    assert len(runs) == 2 * 2 * 3
    params, data = runs[-1]
    assert params == {"task": "screening", "train.epochs": 5, "model": "b", "train.lr": 3e-5}
    assert data == {"train": {"seed": 0, "epochs": 5, "lr": 3e-5}, "task": "screening", "model": "b"}
    assert [p["model"] for p, _ in runs[:6]] == ["a", "a", "a", "b", "b", "b"]  # spec order, last axis fastest


def test_no_axes_no_combos_is_the_base_alone() -> None:
    assert list(expand({"task": "ner"}, {}, [])) == [({}, {"task": "ner"})]


def test_grid_runs_get_folders_named_by_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0, 1, 2]})))
    assert len(grid.runs) == 3 and grid.duplicates == 0
    for run in grid.runs:
        assert run.run_dir == tmp_path / "grid" / "runs" / run.signature
        assert run.config["cache_dir"] == str(tmp_path / "grid" / "cache")  # one tokenization for all runs
        assert run.config["model"] == str(tmp_path / "models" / "mbert")  # relative to the current directory
        assert run.config["progress"] is False
        cfg = build_config(FinetuneConfig, run.config)  # what the job rebuilds
        assert signature(cfg) == run.signature
    assert [r.params for r in grid.runs] == [{"train.seed": s} for s in (0, 1, 2)]
    assert [r.name for r in grid.runs] == [f"mbert · ner-es · es→es+ro · seed {s}" for s in (0, 1, 2)]


# ----------------------------------------------------------------------------- signatures


def test_signature_is_stable_across_key_order_and_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = finetune_config(BASE)
    reordered = {"train": {"lr": "3e-5", "epochs": 2}, "model": str(tmp_path / "models" / "mbert"),
                 "data": {"test": {"ro": "data/ner/ro/test", "es": "data/ner/es/test"}, "format": "brat",
                          "dev": {"es": "data/ner/es/dev"}, "train": "data/ner/es/train"},
                 "task": "ner"}
    b = finetune_config(reordered)
    assert signature(a) == signature(b)
    assert signature(a) == signature(canonical(a))  # idempotent
    assert len(signature(a)) == 10
    # Where the run writes, its feature cache and its progress bar do not change what it computes.
    assert signature(a) == signature(finetune_config({**BASE, "cache_dir": "elsewhere", "progress": False}))


@pytest.mark.parametrize("key, value", [
    ("train.lr", 5e-5), ("train.seed", 1), ("train.batch_size", 32), ("train.epochs", 3), ("model", "models/other"),
    ("data.test", {"es": "data/ner/es/test"}), ("data.train", "data/ner/nl/train"), ("eval.bootstrap", 10),
    ("data.format", "conll"), ("train.max_length", 64),
])
def test_signature_differs_when_any_value_differs(key: str, value: Any) -> None:
    from medtrain.config import apply_override

    changed = json.loads(json.dumps(BASE))
    apply_override(changed, key.split("."), value)
    assert signature(finetune_config(changed)) != signature(finetune_config(BASE))


def test_identical_runs_collapse(tmp_path: Path) -> None:
    body = grid_body(tmp_path, axes={"train.lr": [3e-5, 3.0e-5, "3e-5"], "train.seed": [0, 1]},
                     combos=[{}, {"data.dev": {"es": "data/ner/es/dev"}}, {"train.epochs": 2}])
    grid = load_grid(write_grid(tmp_path, body))
    assert len(grid.runs) == 2 and grid.duplicates == 3 * 3 * 2 - 2
    assert len({r.signature for r in grid.runs}) == 2


# ----------------------------------------------------------------------------- loading and validation


def test_base_file_beside_the_grid_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "ner.yaml").write_text(yaml.safe_dump(BASE), encoding="utf-8")
    path = write_grid(tmp_path / "specs", {"grid_dir": str(tmp_path / "g"), "base": "ner.yaml",
                                           "axes": {"train.seed": [0, 1]}})
    grid = load_grid(path, ["base.train.epochs=7", "executor=local", "local_parallelism=2",
                            f"grid_dir={tmp_path / 'h'}"])
    assert grid.spec.executor == "local" and grid.spec.local_parallelism == 2
    assert grid.grid_dir == tmp_path / "h"
    assert {r.config["train"]["epochs"] for r in grid.runs} == {7}


def test_packaged_demo_grid_expands() -> None:
    grid = load_grid("grid-demo")
    assert len(grid.runs) == 6 and grid.spec.executor == "slurm"
    assert {tuple(r.config["data"]["train"]) for r in grid.runs} == {("es",), ("nl",), ("ro",)}
    assert {tuple(r.config["data"]["test"]) for r in grid.runs} == {("es", "nl", "ro")}


@pytest.mark.parametrize("body, message, line", [
    ({"axes": {"train.lrr": [1e-5]}}, "axes.train.lrr: train.lrr: unknown key; did you mean lr?", 3),
    ({"combos": [{"train": {"sed": 1}}]}, "combos.0.train: train.sed: unknown key; did you mean seed?", 3),
    ({"axes": {"train.lr": ["fast"]}}, "axes.train.lr: train.lr: expected a number, got the string 'fast'", 3),
    ({"axes": {"train.seed": []}}, "axes.train.seed: needs at least one value", 3),
    ({"axes": {"train.seed": [0]}, "combos": [{"train.seed": 1}]}, "combos.0.train.seed: also an axis", 5),
    ({"axes": {"output_dir": ["x"]}}, "axes.output_dir: set by the grid", 3),
    ({"slurm": {"partion": "gpu"}}, "slurm.partion: unknown key; did you mean partition? valid keys: account, "
                                    "constraint, cpus_per_task, extra, gpus_per_node, gpus_per_task", 2),
    ({"slurm": {"extra": {"exlude": "node7"}}}, "slurm.extra.exlude: unknown SLURM parameter; did you mean "
                                                "exclude or exclusive? valid SLURM parameters: additional_parameters",
     3),
    ({"slurm": {"extra": {"partition": "gpu"}}}, "slurm.extra.partition: set by slurm.partition itself", 3),
    ({"slurm": {"gpus_per_node": 1}}, "slurm: a fine-tuning run is one task on one node", 2),
    ({"executor": "cloud"}, "executor: must be one of 'slurm', 'local'", 2),
    ({"axes": {"task": ["screening"]}}, "data.format brat does not fit task screening", None),
])
def test_bad_grid_is_one_error_naming_the_place(tmp_path: Path, body: dict[str, Any], message: str,
                                                line: int | None) -> None:
    path = write_grid(tmp_path, {"grid_dir": "g", **body, "base": BASE})
    with pytest.raises(UserError) as raised:
        load_grid(path)
    error = raised.value
    assert message in error.message
    assert error.path == str(path)
    if line is not None:
        assert error.line == line, error.format()


def test_error_in_a_base_file_points_at_the_base_file(tmp_path: Path) -> None:
    (tmp_path / "ner.yaml").write_text(yaml.safe_dump({**BASE, "train": {"lr": 3e-5, "epoch": 2}}), encoding="utf-8")
    path = write_grid(tmp_path, {"grid_dir": "g", "base": "ner.yaml"})
    with pytest.raises(UserError, match="did you mean epochs") as raised:
        load_grid(path)
    assert raised.value.path == str(tmp_path / "ner.yaml") and raised.value.line is not None


def test_error_in_an_inline_base_points_at_its_line_in_the_grid(tmp_path: Path) -> None:
    path = write_grid(tmp_path, {"grid_dir": "g", "base": {**BASE, "train": {"epoch": 2}}})
    with pytest.raises(UserError, match="base: train.epoch: unknown key; did you mean epochs") as raised:
        load_grid(path)
    assert raised.value.path == str(path)
    assert path.read_text().splitlines()[raised.value.line - 1].strip().startswith("train:")


def test_bad_grid_on_the_command_line_exits_2_and_submits_nothing(tmp_path: Path) -> None:
    path = write_grid(tmp_path, {"grid_dir": str(tmp_path / "g"), "axes": {"train.lrr": [1e-5]}, "base": BASE})
    for command in ([sys.executable, "-m", "medtrain.cli", "grid", "submit", str(path)],
                    [sys.executable, str(Path(__file__).parents[2] / "launchers" / "finetune_grid.py"), str(path)]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {path}:3: axes.train.lrr")
    assert not (tmp_path / "g").exists()


# ----------------------------------------------------------------------------- states and what to launch


def make_run(tmp_path: Path, name: str, complete: bool = False, seed: int = 0) -> Run:
    config = config_to_dict(finetune_config({**BASE, "train": {"seed": seed}}))
    run = Run(name, {"train.seed": seed}, {**config, "output_dir": str(tmp_path / "runs" / name)},
              f"mbert · ner-es · es→es+ro · seed {seed}")
    if complete:
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "results.json").write_text("{}")
    return run


def write_result_pickle(log_folder: Path, job_id: str, outcome: tuple[str, Any]) -> None:
    log_folder.mkdir(parents=True, exist_ok=True)
    with open(log_folder / f"{job_id}_0_result.pkl", "wb") as f:
        pickle.dump(outcome, f)


def test_squeue_output_parses_array_tasks() -> None:
    text = ("12_0        RUNNING     0   None\n12_3        PENDING     1   BeginTime\n"
            "12_4        PENDING     0   ReqNodeNotAvail, UnavailableNodes:n1\n"
            "13_[1-2,5%2]  PENDING   0   JobArrayTaskLimit\n14          CANCELLED   0   JobHeldUser\n")
    jobs = parse_squeue(text)
    assert jobs["12_0"] == SlurmJob("RUNNING", 0, "None")
    assert jobs["12_3"].restarts == 1 and jobs["12_4"].reason == "ReqNodeNotAvail, UnavailableNodes:n1"
    assert {k for k in jobs if k.startswith("13_")} == {"13_1", "13_2", "13_5"}
    # Tasks cancelled before they were split off their array show up as the bare array id.
    assert find_job(jobs, "14_1") == SlurmJob("CANCELLED", 0, "JobHeldUser")
    assert find_job(jobs, "12_0").state == "RUNNING" and find_job(jobs, "15_0") is None


def test_run_states_without_accounting(tmp_path: Path) -> None:
    logs = tmp_path / "slurm"
    record = {"executor": "slurm", "job_id": "7_1"}
    done = make_run(tmp_path, "done", complete=True)
    run = make_run(tmp_path, "r")
    # results.json wins over whatever squeue still shows
    assert run_status(done, record, {"7_1": SlurmJob("RUNNING", 0, "None")}, logs).state == COMPLETED
    assert run_status(run, None, {}, logs).state == NOT_SUBMITTED
    assert run_status(run, record, {"7_1": SlurmJob("PENDING", 0, "JobArrayTaskLimit")}, logs).detail == \
        "JobArrayTaskLimit"
    assert run_status(run, record, {"7_1": SlurmJob("RUNNING", 0, "None")}, logs).state == RUNNING
    requeued = run_status(run, record, {"7_1": SlurmJob("PENDING", 2, "BeginTime")}, logs)
    assert (requeued.state, requeued.detail) == (REQUEUED, "restarted 2x; BeginTime")
    assert run_status(run, record, {"7_1": SlurmJob("REQUEUE_HOLD", 1, "None")}, logs).state == REQUEUED
    # Ended: the reason from the job's log, from squeue's last word, or from submitit's pickled traceback.
    assert run_status(run, record, {}, logs).detail.startswith("ended without results.json")
    assert run_status(run, record, {"7_1": SlurmJob("FAILED", 0, "NonZeroExitCode")}, logs).detail == \
        "SLURM state FAILED (NonZeroExitCode)"
    logs.mkdir()
    (logs / "7_1_0_log.err").write_text("srun: ...\nslurmstepd: error: *** JOB 9 ON node1 CANCELLED AT "
                                        "2026-01-01T10:00:00 DUE TO TIME LIMIT ***\n")
    assert run_status(run, record, {}, logs).detail == "CANCELLED AT 2026-01-01T10:00:00 DUE TO TIME LIMIT"
    (logs / "7_1_0_log.err").write_text("slurmstepd: error: *** JOB 9 ON node1 CANCELLED AT 2026-01-01T10:00:00 "
                                        "DUE TO JOB REQUEUE ***\n")
    between = run_status(run, record, {}, logs)  # requeued, not yet back in squeue
    assert (between.state, between.detail) == (REQUEUED, "being requeued")
    # back and ended again without a line of its own: a failure, not a requeue forever
    again = run_status(run, record, {"7_1": SlurmJob("FAILED", 1, "NonZeroExitCode")}, logs)
    assert again.state == FAILED and again.detail.startswith("restarted after a requeue, then ended in SLURM "
                                                             "state FAILED; see ")
    write_result_pickle(logs, "7_1", ("error", "Traceback (most recent call last):\n  ...\n"
                                               "medtrain.errors.UserError: /d/x: data.dev.es: folder not found\n"))
    failed = run_status(run, record, {"7_1": SlurmJob("FAILED", 0, "NonZeroExitCode")}, logs)
    assert (failed.state, failed.detail) == (FAILED, "UserError: /d/x: data.dev.es: folder not found")


def test_local_run_states(tmp_path: Path) -> None:
    import os

    run = make_run(tmp_path, "r")
    alive = {"executor": "local", "pid": os.getpid()}
    assert run_status(run, alive, {}, tmp_path).state == PENDING
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text("{}")
    assert run_status(run, alive, {}, tmp_path).state == RUNNING
    assert run_status(run, {**alive, "reason": "UserError: x"}, {}, tmp_path).detail == "UserError: x"
    gone = run_status(run, {"executor": "local", "pid": 2 ** 22 + 1}, {}, tmp_path)
    assert gone.state == FAILED and "ended before the run finished" in gone.detail


def test_only_missing_runs_are_launched(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, name) for name in ("a", "b", "c", "d", "e", "f")]
    states = [COMPLETED, PENDING, RUNNING, REQUEUED, FAILED, NOT_SUBMITTED]
    statuses = [RunStatus(run, state, None, "") for run, state in zip(runs, states)]
    assert [r.signature for r in runs_to_launch(statuses)] == ["e", "f"]
    table = format_status(statuses)
    assert table.splitlines()[-1] == "6 runs: 1 completed, 1 running, 1 pending, 1 requeued, 1 failed, " \
                                     "1 not submitted"


def test_submitting_a_complete_grid_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0, 1]})))
    save_jobs(grid.grid_dir, {r.signature: new_record(None, executor="slurm", job_id=f"5_{i}")
                              for i, r in enumerate(grid.runs)})
    for run in grid.runs:
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "results.json").write_text("{}")
    before = (grid.grid_dir / "jobs.json").read_text()
    assert submit_grid(grid) == []  # no squeue call, no sbatch: every run is complete
    assert "2 complete, 0 pending or running, 0 to launch" in capsys.readouterr().out
    assert (grid.grid_dir / "jobs.json").read_text() == before


def test_a_resubmitted_run_keeps_its_earlier_job_ids(tmp_path: Path) -> None:
    first = new_record(None, executor="slurm", job_id="5_0")
    second = new_record(first, executor="slurm", job_id="9_2")
    assert second["job_id"] == "9_2" and second["earlier"] == ["5_0"]
    save_jobs(tmp_path, {"abc": second})
    assert load_jobs(tmp_path) == {"abc": second}


# ----------------------------------------------------------------------------- status lines, paths, TensorBoard


def test_status_names_each_run_once_with_its_signature_apart(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, "a", seed=0), make_run(tmp_path, "b", seed=1)]
    lines = format_status([RunStatus(run, NOT_SUBMITTED, None, "") for run in runs]).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["run", "state", "job", "signature", "detail"]
    assert re.split(r"\s{2,}", lines[1]) == ["mbert · ner-es · es→es+ro · seed 0", "not submitted", "-", "a"]
    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.lr": [1e-5, 2e-5]}, combos=[
        {"data.train": "data/ner/es/train"}, {"data.train": "data/ner/ro/train"}])))
    rows = [re.split(r"\s{2,}", line) for line in format_status(grid_status(grid)).splitlines()[1:-1]]
    assert [row[0] for row in rows] == [f"mbert · ner-{lang} · {lang}→es+ro · seed 0 · train.lr={lr}"
                                        for lang in ("es", "ro") for lr in ("1e-05", "2e-05")]
    assert [row[3] for row in rows] == [run.signature for run in grid.runs]


def test_grid_status_imports_no_torch(tmp_path: Path) -> None:
    path = write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0, 1]}))
    code = ("import sys; from medtrain.cli import run; code = run(['grid', 'status', sys.argv[1]]); "
            "heavy = [m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules]; "
            "assert not heavy, heavy; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 runs: 2 not submitted" in result.stdout


def test_missing_model_or_data_is_one_error_before_launching(tmp_path: Path) -> None:
    for executor in ("local", "slurm"):
        grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, executor=executor)))
        with pytest.raises(UserError, match=r"model folder not found .*; nothing was launched") as raised:
            submit_grid(grid)
        assert raised.value.path == str(Path("models/mbert").resolve())
        assert not (grid.grid_dir / "jobs.json").exists()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, executor="local")), [f"base.model={tmp_path}/model"])
    with pytest.raises(UserError, match=r"data.train.es: folder of .txt/.ann files not found; nothing was") as raised:
        submit_grid(grid)
    assert raised.value.path.endswith("data/ner/es/train")


def test_a_test_language_sharing_no_entity_type_with_training_stops_the_submission(tmp_path: Path) -> None:
    """Checked for every run before anything is launched, not when the array task starts."""
    for folder, entity_type in (("ner/es/train", "ENFERMEDAD"), ("ner/es/dev", "ENFERMEDAD"),
                                ("ner/es/test", "ENFERMEDAD"), ("ner/ro/test", "DISO")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "d.txt").write_text("Tos seca.\n", encoding="utf-8")
        (tmp_path / folder / "d.ann").write_text(f"T1\t{entity_type} 0 3\tTos\n", encoding="utf-8")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    data = {"format": "brat", "train": f"{tmp_path}/ner/es/train", "dev": f"{tmp_path}/ner/es/dev",
            "test": {"es": f"{tmp_path}/ner/es/test", "ro": f"{tmp_path}/ner/ro/test"}}
    base = {**BASE, "model": str(tmp_path / "model"), "data": data}
    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, executor="local", base=base)))
    with pytest.raises(UserError, match=r"data.test.ro: its entity types \(DISO\) share none with the training "
                                        r"languages' \(ENFERMEDAD\).*; nothing was launched"):
        submit_grid(grid)
    assert not (grid.grid_dir / "jobs.json").exists()
    mapped = load_grid(write_grid(tmp_path, grid_body(tmp_path, executor="local", base=base)),
                       ["base.labels={map: {es: {ENFERMEDAD: DISO}}}"])
    check_inputs(mapped, mapped.runs)  # the same types, mapped to one space: accepted


def test_a_failed_local_run_makes_grid_submit_exit_nonzero(tmp_path: Path) -> None:
    for folder in ("model", "ner/es/train", "ner/es/dev", "ner/es/test", "ner/ro/test"):
        (tmp_path / folder).mkdir(parents=True)
        if folder.startswith("ner"):  # one document with one entity: the label-space check passes
            (tmp_path / folder / "d.txt").write_text("Tos seca.\n", encoding="utf-8")
            (tmp_path / folder / "d.ann").write_text("T1\tSYMPTOM 0 3\tTos\n", encoding="utf-8")
    (tmp_path / "model" / "config.json").write_text("{}")  # passes the input checks, fails to load
    data = {"format": "brat", "train": f"{tmp_path}/ner/es/train", "dev": f"{tmp_path}/ner/es/dev",
            "test": {"es": f"{tmp_path}/ner/es/test", "ro": f"{tmp_path}/ner/ro/test"}}
    path = write_grid(tmp_path, grid_body(tmp_path, executor="local", base={**BASE, "model": str(tmp_path / "model"),
                                                                             "data": data}))
    result = subprocess.run([sys.executable, "-m", "medtrain.cli", "grid", "submit", str(path)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 runs: 1 failed" in result.stdout
    progress = next(line for line in result.stdout.splitlines() if line.startswith("[1/1] "))  # named as in status
    assert re.fullmatch(r"\[1/1\] model · ner-es · es→es\+ro · seed 0: failed: .*; log .*/local/[0-9a-f]{10}\.log",
                        progress), progress


def tensorboard_runs(folder: Path) -> list[str]:
    """What `tensorboard --logdir FOLDER` lists, by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(folder))
    return sorted(multiplexer.Runs())


def start_run(run: Run, config: dict[str, Any] | None = None) -> None:
    """What a started run leaves: its config.yaml, and TensorBoard events where its config says."""
    from torch.utils.tensorboard import SummaryWriter

    config = config or run.config
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with SummaryWriter(config.get("tensorboard_dir") or str(run.run_dir / "tensorboard")) as writer:
        writer.add_scalar("train/loss", 1.0, 1)


def test_tensorboard_lists_each_grid_run_once_by_name(tmp_path: Path) -> None:
    from medtrain.grid.tensorboard import link_runs

    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0, 1]})))
    names = [f"mbert · ner-es · es→es+ro · seed {s}" for s in (0, 1)]
    assert [r.config["tensorboard_dir"] for r in grid.runs] == [str(grid.grid_dir / "tensorboard" / n) for n in names]
    assert link_runs(grid) == {r.signature: grid.grid_dir / "tensorboard" / n for r, n in zip(grid.runs, names)}
    for run in grid.runs:
        start_run(run)
    assert tensorboard_runs(grid.grid_dir) == [f"tensorboard/{n}" for n in names]  # once each, not by signature
    assert tensorboard_runs(tmp_path) == [f"grid/tensorboard/{n}" for n in names]  # a study's folder
    link_runs(grid)  # idempotent
    assert tensorboard_runs(grid.grid_dir) == [f"tensorboard/{n}" for n in names]


def test_earlier_layouts_and_renamed_runs_move_their_events(tmp_path: Path) -> None:
    """Events in RUN_DIR/tensorboard with a link to them (each run listed twice), or under a name the grid no
    longer gives the run: moved to the folder of its name, config.yaml updated, so a resumed run goes on
    there; a run with a live job is left as it is until it ends."""
    from medtrain.grid.tensorboard import link_runs

    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0, 1]})))
    for run in grid.runs:
        start_run(run, {k: v for k, v in run.config.items() if k != "tensorboard_dir"})
    (grid.grid_dir / "tensorboard").mkdir()
    (grid.grid_dir / "tensorboard" / "seed0").symlink_to(f"../runs/{grid.runs[0].signature}/tensorboard")
    (grid.grid_dir / "tensorboard" / "notes.txt").write_text("kept")
    assert len(tensorboard_runs(grid.grid_dir)) == 3
    link_runs(grid)
    names = [f"tensorboard/mbert · ner-es · es→es+ro · seed {s}" for s in (0, 1)]
    assert tensorboard_runs(grid.grid_dir) == names
    assert (grid.grid_dir / "tensorboard" / "notes.txt").read_text() == "kept"
    for run in grid.runs:
        assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["tensorboard_dir"] == \
            run.config["tensorboard_dir"]
    # A learning-rate axis: the names gain train.lr=; seed 1's job is running, so it keeps its folder for now.
    wider = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0, 1], "train.lr": [3e-5, 1e-4]})))
    assert {r.signature for r in grid.runs} <= {r.signature for r in wider.runs}
    statuses = grid_status(wider)
    statuses = [RunStatus(s.run, RUNNING, "7_1", "") if s.run.signature == grid.runs[1].signature else s
                for s in statuses]
    link_runs(wider, statuses)
    assert tensorboard_runs(grid.grid_dir) == ["tensorboard/mbert · ner-es · es→es+ro · seed 0 · train.lr=3e-05",
                                               names[1]]
    link_runs(wider, grid_status(wider))  # it has ended
    assert tensorboard_runs(grid.grid_dir) == [f"{names[s]} · train.lr=3e-05" for s in (0, 1)]


def test_a_run_taking_over_a_name_does_not_write_into_another_runs_curves(tmp_path: Path) -> None:
    """A changed base learning rate: new signatures, the same names. The old runs' curves move aside to
    `<name> · <signature>`; the new runs start in folders of their own."""
    from medtrain.grid.tensorboard import MARKER, link_runs

    old = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0]})))
    link_runs(old)
    start_run(old.runs[0])
    new = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0]})), ["base.train.lr=1e-4"])
    assert new.runs[0].name == old.runs[0].name and new.runs[0].signature != old.runs[0].signature
    link_runs(new)
    name = f"tensorboard/{old.runs[0].name}"
    assert tensorboard_runs(new.grid_dir) == [f"{name} · {old.runs[0].signature}"]  # its curves, aside
    assert (new.grid_dir / name / MARKER).read_text().strip() == new.runs[0].signature
    start_run(new.runs[0])
    assert tensorboard_runs(new.grid_dir) == [name, f"{name} · {old.runs[0].signature}"]
    link_runs(old)  # back again: each run's curves in the folder of its name, the other's aside
    assert tensorboard_runs(new.grid_dir) == [name, f"{name} · {new.runs[0].signature}"]
    assert (new.grid_dir / name / MARKER).read_text().strip() == old.runs[0].signature


# ----------------------------------------------------------------------------- several runs per task


def test_runs_per_task_and_per_process_default_and_validation(tmp_path: Path) -> None:
    from medtrain.cluster.resources import RUNS_PER_TASK

    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path)))
    assert grid.spec.slurm.runs_per_task == RUNS_PER_TASK > 1 and grid.spec.local_runs_per_process == RUNS_PER_TASK
    one = load_grid(write_grid(tmp_path, grid_body(tmp_path)), ["slurm.runs_per_task=1", "local_runs_per_process=1"])
    assert one.spec.slurm.runs_per_task == 1 and one.spec.local_runs_per_process == 1
    for override, message in (("slurm.runs_per_task=0", "slurm.runs_per_task must be >= 1"),
                              ("local_runs_per_process=0", "local_runs_per_process")):
        with pytest.raises(UserError, match=re.escape(message)):
            load_grid(write_grid(tmp_path, grid_body(tmp_path)), [override])


def test_study_settings_of_runs_per_task_and_per_process() -> None:
    from medtrain.cluster.resources import SlurmResources
    from medtrain.study.config import LocalConfig

    assert LocalConfig(runs_per_process=2).runs_per_process == 2
    with pytest.raises(ValueError, match="runs_per_process"):
        LocalConfig(runs_per_process=0)
    assert config_to_dict(SlurmResources(runs_per_task=3))["runs_per_task"] == 3  # the grid's slurm section


def test_an_array_task_holds_runs_per_task_runs_under_one_job_id(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from medtrain.cluster import executor
    from medtrain.grid import submit

    grid = load_grid(write_grid(tmp_path, grid_body(tmp_path, axes={"train.seed": [0, 1, 2, 3, 4]},
                                                    slurm={"runs_per_task": 2})))
    submitted: list[Any] = []

    class Job:
        def __init__(self, index: int):
            self.job_id = f"40_{index}"

    def fake_submit(folder: Path, params: dict[str, Any], max_timeouts: int, tasks: list[Any],
                    local_hint: str = "") -> list[Job]:
        submitted.extend(tasks)
        return [Job(i) for i in range(len(tasks))]

    monkeypatch.setattr(executor, "submit", fake_submit)
    failed = grid.runs[4].run_dir
    failed.mkdir(parents=True)
    (failed / "failed.json").write_text('{"reason": "UserError: earlier"}')
    lines: list[str] = []
    submit._submit_array(grid, grid.runs, lines.append)
    assert [[Path(c["output_dir"]).name for c in task.configs] for task in submitted] == \
        [[r.signature for r in grid.runs[i:i + 2]] for i in (0, 2, 4)]
    records = load_jobs(grid.grid_dir)
    assert [records[r.signature]["job_id"] for r in grid.runs] == ["40_0", "40_0", "40_1", "40_1", "40_2"]
    assert [records[r.signature].get("task_position") for r in grid.runs] == [0, 1, 0, 1, None]
    assert lines[0].startswith("submitted SLURM array 40: 5 runs in 3 tasks (2 a task, one after another)")
    # relaunching a run removes the reason its earlier attempt left
    monkeypatch.setattr(submit, "grid_status", lambda g: [RunStatus(r, NOT_SUBMITTED, None, "") for r in g.runs])
    monkeypatch.setattr(submit, "check_inputs", lambda g, runs: None)
    submit_grid(grid, lines.append)
    assert not (failed / "failed.json").exists()


def test_a_run_failing_inside_a_task_records_why_and_the_others_go_on(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import medtrain.finetune.run
    from medtrain.cluster.finetune_task import FinetuneTask

    runs = [make_run(tmp_path, name, seed=i) for i, name in enumerate(("a", "b", "c", "d"))]
    make_run(tmp_path, "a", complete=True)
    calls: list[str] = []

    def fake_finetune(cfg: FinetuneConfig) -> int:
        calls.append(cfg.output_dir.name)
        if cfg.output_dir.name == "b":
            raise UserError("data.dev: folder not found", Path("/d/x"))
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        (cfg.output_dir / "results.json").write_text("{}")
        return 0

    monkeypatch.setattr(medtrain.finetune.run, "finetune", fake_finetune)
    task = FinetuneTask([r.config for r in runs], threads=1, log_dir=tmp_path)
    with pytest.raises(UserError, match=r"1 of 4 runs of this task failed: .*/b \(UserError: /d/x: data.dev"):
        task()
    assert calls == ["b", "c", "d"]  # a: complete before (a requeued task skips it); c, d: after b failed
    assert json.loads((runs[1].run_dir / "failed.json").read_text())["reason"] == \
        "UserError: /d/x: data.dev: folder not found"
    assert "folder not found" in (tmp_path / "b.log").read_text()
    # started again (a requeue): the failed run is not tried again in the same task
    calls.clear()
    with pytest.raises(UserError):
        task()
    assert calls == []
    # status: the run's own reason, once its task has ended; before that, the task's state with the reason
    record = {"executor": "slurm", "job_id": "8_0", "task_position": 1}
    ended = run_status(runs[1], record, {"8_0": SlurmJob("FAILED", 0, "NonZeroExitCode")}, tmp_path / "slurm")
    assert (ended.state, ended.detail) == (FAILED, "UserError: /d/x: data.dev: folder not found")
    live = run_status(runs[1], record, {"8_0": SlurmJob("RUNNING", 0, "None")}, tmp_path / "slurm")
    assert live.state == RUNNING and live.detail == "failed, its task goes on: UserError: /d/x: data.dev: folder " \
                                                    "not found"
    waiting = make_run(tmp_path, "e")
    behind = run_status(waiting, record, {"8_0": SlurmJob("RUNNING", 0, "None")}, tmp_path / "slurm")
    assert (behind.state, behind.detail) == (PENDING, "after earlier runs of its task")
    # one run a task (relaunched: its failed.json removed): its own exception, as before
    (runs[1].run_dir / "failed.json").unlink()
    with pytest.raises(UserError, match="^/d/x: data.dev: folder not found"):
        FinetuneTask(runs[1].config)()
