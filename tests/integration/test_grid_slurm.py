"""A fine-tuning grid on the local SLURM cluster (no accounting: states come from squeue and submitit's files).

One array of tiny NER runs (2 at a time) completes next to two broken runs that fail with their reason;
resubmitting launches only what is missing and nothing that is still queued; cancel stops the queued jobs;
`medtrain results` tabulates what finished. Then preemption for real: one run hits its 1-minute time limit
(SIGUSR2 -> checkpoint() -> requeue) and one is requeued with `scontrol requeue`; both resume after their
last finished epoch and end with every epoch trained and logged exactly once.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from medtrain.cli import run as medtrain
from medtrain.cluster.jobs import LIVE
from medtrain.data.sample import write_sample_data
from medtrain.grid.records import load_jobs
from medtrain.grid.spec import Grid, load_grid
from medtrain.grid.status import COMPLETED, FAILED, REQUEUED, RunStatus, format_status, grid_status
from medtrain.grid.submit import cancel_grid

from _sample_types import DUTCH_TO_SHARED, SPANISH_TO_SHARED

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
SCALE = 0.3
WAIT_S = 480  # per wait: a hang fails the test instead of blocking the suite
EMPTY_DEV = "ner/es/empty"
"""A dev folder that exists (so the grid launches the run) without documents (so the run fails)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grid") / "data"
    write_sample_data(out, seed=0, scale=SCALE)
    (out / EMPTY_DEV).mkdir()
    return out


@pytest.fixture(scope="module")
def models(data: Path) -> list[Path]:
    """Two tiny BERT folders (different initialisations) standing for two pretrained models."""
    tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
    folders = []
    for seed in (0, 1):
        out = data.parent / f"bert-{'ab'[seed]}"
        torch.manual_seed(seed)
        BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=64)).save_pretrained(str(out))
        for file in (data / "tokenizer").iterdir():
            shutil.copy2(file, out / file.name)
        folders.append(out)
    return folders


def base_config(data: Path, model: Path, epochs: int) -> dict[str, Any]:
    ner = data / "ner"
    return {"task": "ner", "model": str(model),
            "data": {"format": "brat", "train": str(ner / "es" / "train"), "dev": str(ner / "es" / "dev"),
                     "test": {"es": str(ner / "es" / "test"), "nl": str(ner / "nl" / "test")}},
            "labels": {"map": {"es": SPANISH_TO_SHARED, "nl": DUTCH_TO_SHARED}},
            "train": {"epochs": epochs, "lr": 3e-3, "batch_size": 8, "max_length": 32},
            "eval": {"bootstrap": 20}}


def write_grid(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def start_requeued_now(statuses: list[RunStatus]) -> None:
    """A requeued job waits ~2 min (BeginTime) before it may start again; the test does not."""
    for s in statuses:
        if s.state == REQUEUED and "BeginTime" in s.detail:
            subprocess.run(["scontrol", "update", f"JobId={s.job_id}", "StartTime=now"], capture_output=True,
                           timeout=60, check=False)


def set_time_limit(job_id: str, minutes: int) -> None:
    """Fails unless squeue then shows the new limit (an update that SLURM took but did not keep would otherwise
    surface minutes later as a restart killed by the old limit)."""
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}"], check=True,
                   capture_output=True, timeout=60)
    shown = subprocess.run(["squeue", "-h", "-j", job_id, "-O", "TimeLimit"], check=True, capture_output=True,
                           text=True, timeout=60).stdout.strip()
    assert shown == f"{minutes}:00", f"job {job_id}: TimeLimit={minutes} set, squeue shows {shown!r}"


def wait_for(grid: Grid, done: Callable[[list[RunStatus]], bool], what: str) -> list[RunStatus]:
    deadline = time.monotonic() + WAIT_S
    while True:
        statuses = grid_status(grid)
        if done(statuses):
            return statuses
        if time.monotonic() > deadline:
            pytest.fail(f"the grid did not {what} within {WAIT_S}s:\n{format_status(statuses)}")
        start_requeued_now(statuses)
        time.sleep(1)


def settled(statuses: list[RunStatus]) -> bool:
    return not any(s.state in LIVE for s in statuses)


def by_state(statuses: list[RunStatus]) -> dict[str, list[RunStatus]]:
    out: dict[str, list[RunStatus]] = {}
    for s in statuses:
        out.setdefault(s.state, []).append(s)
    return out


def dev_steps(run_dir: Path) -> list[int]:
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if any(k.startswith("eval/") for k in r)]


@pytest.fixture(scope="module")
def array_grid(slurm_cluster, data: Path, models: list[Path], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Path, Grid]]:
    """Two models x seeds {0, 1} (a repeated combination collapses) and a broken run per model, submitted
    with the launcher as one array, two tasks at a time; waited for until nothing is queued."""
    folder = tmp_path_factory.mktemp("array")
    spec = write_grid(folder / "grid.yaml", {
        "grid_dir": str(folder / "grid"), "base": base_config(data, models[0], epochs=1),
        "axes": {"model": [str(m) for m in models]},
        "combos": [{"train.seed": 0}, {"train.seed": 1}, {"train.seed": 0, "train.epochs": 1},
                   {"train.seed": 2, "data.dev": str(data / EMPTY_DEV)}],
        "array_parallelism": 2, "slurm": {"partition": slurm_cluster.partition, "time_min": 10,
                                          "runs_per_task": 1}})  # one run a task (several: test_runs_per_task_...)
    grid = load_grid(spec)
    try:
        out = subprocess.run([sys.executable, str(REPO / "launchers" / "finetune_grid.py"), str(spec)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "6 runs (2 duplicate combinations collapsed): 0 complete, 0 pending or running, 6 to launch" in \
            out.stdout
        assert re.search(r"submitted SLURM array \d+: 6 runs, at most 2 at a time", out.stdout), out.stdout
        yield spec, grid
    finally:
        cancel_grid(grid)


def test_array_completes_and_a_failing_run_reports_why(array_grid: tuple[Path, Grid], data: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec, grid = array_grid
    jobs = load_jobs(grid.grid_dir)
    assert len({j["job_id"].split("_")[0] for j in jobs.values()}) == 1  # one array
    # While the array is queued or running, submitting again launches nothing.
    assert medtrain(["grid", "submit", str(spec)]) == 0
    assert "0 to launch" in capsys.readouterr().out and load_jobs(grid.grid_dir) == jobs
    statuses = wait_for(grid, settled, "finish")
    states = by_state(statuses)
    assert len(states.get(COMPLETED, [])) == 4 and len(states.get(FAILED, [])) == 2, format_status(statuses)
    for s in states[FAILED]:
        assert s.run.params["data.dev"] == str(data / EMPTY_DEV)
        assert s.detail == f"UserError: {data / EMPTY_DEV}: no .txt files in this BRAT folder"
    for s in states[COMPLETED]:
        results = json.loads((s.run.run_dir / "results.json").read_text())
        assert results["eval_languages"] == ["es", "nl"] and s.run.run_dir.parent == grid.grid_dir / "runs"
    assert medtrain(["grid", "status", str(spec)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[-1] == "6 runs: 4 completed, 2 failed" and "UserError:" in table
    assert {re.search(r" · seed (\d) ", line)[1] for line in table.splitlines()[1:-1] if "completed" in line} == \
        {"0", "1"}  # each run by its name: model · task · languages · seed


def test_resubmission_launches_only_what_is_missing(array_grid: tuple[Path, Grid],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec, grid = array_grid
    before = load_jobs(grid.grid_dir)
    broken = {s.run.signature for s in grid_status(grid) if s.state == FAILED}
    # Held in the queue (sbatch --hold: resources are not part of a run's identity), so cancel has work to do.
    assert medtrain(["grid", "submit", str(spec), "slurm.extra.additional_parameters.hold=true"]) == 0
    assert "4 complete, 0 pending or running, 2 to launch" in capsys.readouterr().out
    after = load_jobs(grid.grid_dir)
    assert {sig for sig in after if after[sig] != before[sig]} == broken
    for sig in broken:
        assert after[sig]["earlier"] == [before[sig]["job_id"]]
    assert {s.state for s in grid_status(grid) if s.run.signature in broken} == {"pending"}
    assert medtrain(["grid", "submit", str(spec)]) == 0
    assert "4 complete, 2 pending or running, 0 to launch" in capsys.readouterr().out
    assert medtrain(["grid", "cancel", str(spec)]) == 0
    assert capsys.readouterr().out.startswith("cancelled 2 jobs")
    statuses = wait_for(grid, settled, "settle after cancel")
    assert {s.detail for s in statuses if s.state == FAILED} == {"SLURM state CANCELLED (JobHeldUser)"}
    # The same grid without the broken combination: everything is complete, so nothing is submitted.
    body = yaml.safe_load(spec.read_text())
    body["combos"] = body["combos"][:3]
    fixed = write_grid(spec.with_name("fixed.yaml"), body)
    jobs_file = (grid.grid_dir / "jobs.json").read_text()
    assert medtrain(["grid", "submit", str(fixed)]) == 0
    assert "4 runs (2 duplicate combinations collapsed): 4 complete, 0 pending or running, 0 to launch" in \
        capsys.readouterr().out
    assert (grid.grid_dir / "jobs.json").read_text() == jobs_file


def test_results_table_plots_and_hparams(array_grid: tuple[Path, Grid], capsys: pytest.CaptureFixture[str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    _, grid = array_grid
    assert medtrain(["results", str(grid.grid_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 finished runs" in out
    lines = [line for line in (grid.grid_dir / "results.md").read_text().splitlines() if line.startswith("| bert")]
    assert sorted(line.split(" | ")[2] for line in lines) == ["es → es", "es → es", "es → nl", "es → nl"]
    assert all(line.split(" | ")[3] == "2" for line in lines)  # two seeds per row
    assert (grid.grid_dir / "results.csv").read_text().count("\n") == 5
    assert {p.name for p in (grid.grid_dir / "plots").iterdir()} == {"heatmap-ner.png", "bars-ner.png"}
    # TensorBoard's own reader lists each finished run once, by its name, with its HParams session beside it
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    listed = EventMultiplexer().AddRunsFromDirectory(str(grid.grid_dir)).Runs()
    finished = [s.run for s in grid_status(grid) if s.state == COMPLETED]
    assert {f"tensorboard/{Path(r.config['tensorboard_dir']).name}" for r in finished} <= set(listed)
    assert not [name for name in listed if "runs/" in name]  # no second listing through the run folders
    events = EventAccumulator(finished[0].config["tensorboard_dir"])
    events.Reload()
    start = metadata.parse_session_start_info_plugin_data(
        events.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["model"].string_value in ("bert-a", "bert-b")
    assert {"test/f1_es", "test/f1_nl", "train/loss"} <= set(events.Tags()["scalars"])


def test_time_limit_and_scontrol_requeue_resume_without_repeating_epochs(
        slurm_cluster, data: Path, models: list[Path], tmp_path: Path) -> None:
    """Two grids of one run each, side by side. One meets its time limit: once its first epoch is saved the
    limit is cut to 1 minute, so slurmctld's next limit check (every 30 s) sends SIGUSR2 (59 s before the
    limit) and checkpoint() requeues it; the limit goes back up before it restarts. (A 1-minute limit from
    the start would signal it 1-30 s into start-up, before submitit's handler exists on a loaded machine.)
    The other is requeued from outside with `scontrol requeue` once its first epoch is saved."""
    limited = load_grid(write_grid(tmp_path / "limited.yaml", {
        "grid_dir": str(tmp_path / "limited"), "base": base_config(data, models[0], epochs=300),  # > 50 s of work
        "slurm": {"partition": slurm_cluster.partition, "time_min": 10, "signal_delay_s": 59, "max_timeouts": 3}}))
    requeued = load_grid(write_grid(tmp_path / "requeued.yaml", {
        "grid_dir": str(tmp_path / "requeued"), "base": base_config(data, models[1], epochs=100),  # > 40 s
        "slurm": {"partition": slurm_cluster.partition, "time_min": 10}}))
    grids = (limited, requeued)
    try:
        for grid in grids:
            assert medtrain(["grid", "submit", str(grid.source)]) == 0
        limited_run = limited.runs[0]
        limited_job = load_jobs(limited.grid_dir)[limited_run.signature]["job_id"]
        wait_for(limited, lambda _: (limited_run.run_dir / "checkpoint" / "last.pt").is_file(), "save an epoch")
        set_time_limit(limited_job, minutes=1)
        run = requeued.runs[0]
        job = load_jobs(requeued.grid_dir)[run.signature]["job_id"]
        wait_for(requeued, lambda _: (run.run_dir / "checkpoint" / "last.pt").is_file(), "save an epoch")
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, timeout=60)
        assert not (run.run_dir / "results.json").is_file(), "the run finished before it could be requeued"
        [seen] = wait_for(requeued, lambda st: st[0].state == REQUEUED, "show the run as requeued")
        assert seen.detail.startswith("restarted 1x")
        start_requeued_now([seen])
        # pending again (BeginTime), not still completing its first run, so the raised limit is the restart's
        [timed_out] = wait_for(limited, lambda st: st[0].state == REQUEUED and "BeginTime" in st[0].detail,
                               "requeue at its limit")
        set_time_limit(limited_job, minutes=10)
        start_requeued_now([timed_out])
        for grid in grids:
            wait_for(grid, lambda st: st[0].state == COMPLETED, "complete")
    finally:
        for grid in grids:
            cancel_grid(grid)
    for grid, stop in ((limited, "this job is timed-out"), (requeued, "DUE TO JOB REQUEUE")):
        [status] = grid_status(grid)
        log = "".join(p.read_text() for p in (grid.grid_dir / "slurm").glob(f"{status.job_id}_0_log.*"))
        assert stop in log, log[-3000:]
        run_dir, epochs = status.run.run_dir, status.run.config["train"]["epochs"]
        assert re.search(rf"resuming {run_dir} after epoch [1-9]\d* of {epochs}", log), log[-3000:]
        steps = dev_steps(run_dir)
        assert steps == [steps[0] * e for e in range(1, epochs + 1)]  # every epoch once: none lost, none repeated
        assert json.loads((run_dir / "results.json").read_text())["epochs"] == epochs
    limited_log = (limited.grid_dir / "slurm" / f"{grid_status(limited)[0].job_id}_0_log.out").read_text()
    assert re.search(r"Requeued job \S+ \(\d+ remaining timeouts\)", limited_log)


def test_runs_per_task_share_one_task_and_a_requeue_resumes_the_run_it_was_in(
        slurm_cluster, data: Path, models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Four runs one after another in one task (runs_per_task: 4), requeued with `scontrol requeue` once its
    second run has saved an epoch: the restarted task skips the runs it completed, resumes the one it was in
    after its last saved epoch and does the rest; every run's epochs are trained once. (submitit ignores the
    requeue's SIGTERM, so the task goes on until SIGKILL: the run it was in is the second or a later one.)"""
    epochs = 40  # ~8 s a run: still in the middle of the task when the SIGKILL comes
    grid = load_grid(write_grid(tmp_path / "grid.yaml", {
        "grid_dir": str(tmp_path / "grid"), "base": base_config(data, models[0], epochs=epochs),
        "axes": {"train.seed": [0, 1, 2, 3]},
        "slurm": {"partition": slurm_cluster.partition, "time_min": 10, "runs_per_task": 4}}))
    first, second, *_ = grid.runs
    try:
        assert medtrain(["grid", "submit", str(grid.source)]) == 0
        assert ": 4 runs, one after another; logs:" in capsys.readouterr().out
        records = load_jobs(grid.grid_dir)
        [job] = {records[r.signature]["job_id"] for r in grid.runs}  # one task holds all four
        statuses = wait_for(grid, lambda _: (second.run_dir / "checkpoint" / "last.pt").is_file(),
                            "save an epoch of its second run")
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, timeout=60)
        assert first.complete, format_status(statuses)
        # the last run waits behind the task's earlier runs: pending, while the task runs
        assert (statuses[3].state, statuses[3].detail) == ("pending", "after earlier runs of its task")
        statuses = wait_for(grid, lambda st: any(s.state == REQUEUED for s in st), "show the task as requeued")
        assert not all(s.run.complete for s in statuses), "the task finished before it was killed"
        statuses = wait_for(grid, lambda st: all(s.state == COMPLETED for s in st), "complete")
    finally:
        cancel_grid(grid)
    assert medtrain(["grid", "status", str(grid.source)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[-1] == "4 runs: 4 completed" and sum(f" {job} " in line for line in table) == 4
    log = "".join(p.read_text() for p in (grid.grid_dir / "slurm").glob(f"{job}_0_log.*"))
    resumed = re.findall(rf"resuming (\S+) after epoch [1-9]\d* of {epochs}", log)
    assert "DUE TO JOB REQUEUE" in log and len(resumed) == 1 and resumed[0] != str(first.run_dir), log[-3000:]
    assert "already complete" not in log  # the restarted task skipped its complete runs itself
    for run in grid.runs:
        steps = dev_steps(run.run_dir)
        assert steps == [steps[0] * e for e in range(1, epochs + 1)], run.name  # every epoch once
        assert json.loads((run.run_dir / "results.json").read_text())["epochs"] == epochs


def test_local_executor_runs_the_same_grid_here(data: Path, models: list[Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """executor: local: two processes at a time on this machine, two runs one after another in the first; a
    failure is recorded and the process goes on with its next run."""
    spec = write_grid(tmp_path / "grid.yaml", {
        "grid_dir": str(tmp_path / "grid"), "base": base_config(data, models[0], epochs=1),
        "combos": [{"train.seed": 2, "data.dev": str(data / EMPTY_DEV)}, {"train.seed": 0}, {"train.seed": 1}],
        "executor": "local", "local_parallelism": 2, "local_runs_per_process": 2})
    assert medtrain(["grid", "submit", str(spec)]) == 1  # a run failed
    out = capsys.readouterr().out
    assert "3 runs: 0 complete, 0 pending or running, 3 to launch" in out and "2 at a time" in out
    assert out.splitlines()[-1] == "3 runs: 2 completed, 1 failed"
    grid = load_grid(spec)
    failed = next(s for s in grid_status(grid) if s.state == FAILED)
    assert failed.detail == f"UserError: {data / EMPTY_DEV}: no .txt files in this BRAT folder"
    log = grid.grid_dir / "local" / f"{failed.run.signature}.log"
    assert "no .txt files in this BRAT folder" in log.read_text()
