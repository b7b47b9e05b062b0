"""`medtrain results`: fabricated run folders (config.yaml + results.json, as finetune writes them) -> table
aggregation (mean ± std over seeds), differing columns only, best marked, CSV/markdown, plots, TensorBoard hparams;
and the one readable name each grid run goes by (medtrain/grid/names.py)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from medtrain.cli import run as cli
from medtrain.grid.results import to_csv, to_markdown
from medtrain.grid.hparams import SESSION_FILE
from medtrain.grid.names import MAX_FOLDER_BYTES, folder_name, run_names
from medtrain.grid.table import build_table, differing_columns, find_run_dirs, load_run, short_names


def fake_run(folder: Path, *, model: str = "/m/mbert", seed: int = 0, lr: float = 3e-5, train: str = "es",
             f1: dict[str, float] | None = None, test_root: str = "/data/ner", task: str = "ner") -> Path:
    """A run folder as finetune leaves it, with only the fields the table reads."""
    f1 = f1 or {"es": 0.8, "ro": 0.5}
    config = {"output_dir": str(folder), "task": task, "model": model,
              "data": {"format": "brat", "train": {train: f"/data/ner/{train}/train"},
                       "dev": {train: f"/data/ner/{train}/dev"},
                       "test": {lang: f"{test_root}/{lang}/test" for lang in f1}},
              "train": {"epochs": 2, "lr": lr, "batch_size": 16, "seed": seed},
              "screening": {"stride": 128}, "eval": {"bootstrap": 100}, "cache_dir": f"/cache/{seed}",
              "save_model": False, "progress": False}
    results = {"task": task, "model": model, "seed": seed, "train_languages": [train], "dev_languages": [train],
               "eval_languages": list(f1), "dev": {"f1": 0.7},
               "test": {lang: {"f1": {"value": v, "lo": v - 0.1, "hi": v + 0.1},
                               "precision": {"value": v + 0.05}, "recall": {"value": v - 0.05}}
                        for lang, v in f1.items()}}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    """Two models x two learning rates x three seeds, trained on es, tested on es and ro."""
    root = tmp_path / "grid"
    k = 0
    for model, base in (("/models/mbert/export", 0.6), ("/runs/mbert-med/export", 0.7)):
        for lr, bonus in ((3e-5, 0.0), (5e-5, 0.05)):
            for seed in (0, 1, 2):
                fake_run(root / "runs" / f"r{k:02d}", model=model, seed=seed, lr=lr,
                         f1={"es": base + bonus + 0.01 * seed, "ro": base + bonus - 0.2 + 0.02 * seed})
                k += 1
    (root / "runs" / "unfinished").mkdir()  # no results.json: not in the table
    return root


def rows_by(table: Any) -> dict[tuple[Any, ...], Any]:
    return {(r.model, r.eval, *r.settings): r for r in table.rows}


def test_mean_and_std_over_seeds_with_only_differing_columns(grid_dir: Path) -> None:
    runs = [load_run(d) for d in find_run_dirs(grid_dir)]
    assert len(runs) == 12
    table = build_table(runs)
    assert table.columns == ["train.lr"]  # seeds are averaged; cache_dir, output_dir and paths are bookkeeping
    assert table.models == {"/models/mbert/export": "mbert", "/runs/mbert-med/export": "mbert-med"}
    assert len(table.rows) == 2 * 2 * 2
    row = rows_by(table)[("mbert-med", "ro", 5e-5)]
    values = [0.7 + 0.05 - 0.2 + 0.02 * s for s in (0, 1, 2)]
    assert row.stats["f1"][0] == pytest.approx(statistics.fmean(values))
    assert row.stats["f1"][1] == pytest.approx(statistics.stdev(values))
    assert row.stats["precision"][0] == pytest.approx(statistics.fmean(values) + 0.05)
    assert [r.seed for r in row.runs] == [0, 1, 2]


def test_best_model_marked_per_task_and_language_pair(grid_dir: Path) -> None:
    table = build_table([load_run(d) for d in find_run_dirs(grid_dir)])
    best = {(r.model, r.eval, *r.settings) for r in table.rows if r.best}
    assert best == {("mbert-med", "es", 5e-5), ("mbert-med", "ro", 5e-5)}
    markdown = to_markdown(table)
    header, rule, *lines = markdown.splitlines()
    assert header == "| model | task | train → eval | train.lr | runs | F1 | precision | recall |"
    winner = next(line for line in lines if "| mbert-med | ner | es → es | 5e-05" in line)
    assert "**0.760 ± 0.010**" in winner and "| 3 |" in winner
    assert sum(line.count("**") for line in lines if line.startswith("|")) == 4


def test_csv_has_one_row_per_group_with_numbers(grid_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(build_table([load_run(d) for d in find_run_dirs(grid_dir)])))))
    assert len(rows) == 8
    row = next(r for r in rows if r["model"] == "mbert" and r["eval"] == "es" and r["train.lr"] == "3e-05")
    assert (row["train"], row["runs"], row["seeds"], row["best"]) == ("es", "3", "0 1 2", "false")
    assert float(row["f1_mean"]) == pytest.approx(0.61) and float(row["f1_std"]) == pytest.approx(0.01)


def test_ties_mark_no_best_and_one_seed_has_no_std(tmp_path: Path) -> None:
    for k, model in enumerate(("/m/a", "/m/b")):
        fake_run(tmp_path / f"r{k}", model=model, f1={"es": 0.5})
    table = build_table([load_run(d) for d in find_run_dirs(tmp_path)])
    assert not any(r.best for r in table.rows) and table.columns == []
    assert table.rows[0].stats["f1"] == (0.5, None)
    assert "| a | ner | es → es | 1 | 0.500 | 0.550 | 0.450 |" in to_markdown(table)


def test_data_paths_show_only_where_they_would_be_averaged_as_seeds(tmp_path: Path) -> None:
    fake_run(tmp_path / "v1", test_root="/data/v1")
    fake_run(tmp_path / "v2", test_root="/data/v2")
    runs = [load_run(d) for d in find_run_dirs(tmp_path)]
    assert differing_columns(runs) == ["data.test.es", "data.test.ro"]
    fake_run(tmp_path / "other-train", train="nl", seed=1)  # different languages: no path column needed for it
    assert len(build_table([load_run(d) for d in find_run_dirs(tmp_path)]).rows) == 2 * 2 + 2


def test_dev_languages_show_only_where_they_do_not_follow_training(tmp_path: Path) -> None:
    fake_run(tmp_path / "es", train="es")
    fake_run(tmp_path / "nl", train="nl")
    assert differing_columns([load_run(d) for d in find_run_dirs(tmp_path)]) == []
    other_dev = fake_run(tmp_path / "es-dev-ro", train="es", seed=1)
    results = json.loads((other_dev / "results.json").read_text())
    (other_dev / "results.json").write_text(json.dumps({**results, "dev_languages": ["ro"]}))
    config = yaml.safe_load((other_dev / "config.yaml").read_text())  # finetune writes both alike
    (other_dev / "config.yaml").write_text(yaml.safe_dump({**config, "data": {**config["data"],
                                                                                "dev": {"ro": "/data/ner/ro/dev"}}}))
    assert differing_columns([load_run(d) for d in find_run_dirs(tmp_path)]) == ["dev"]


def test_short_model_names() -> None:
    """A pretraining run's export/ is named by its run, as the study names its models."""
    assert short_names(["/a/x/export", "/a/y/export"]) == {"/a/x/export": "x", "/a/y/export": "y"}
    assert short_names(["/s/pretrain/clinical/export"]) == {"/s/pretrain/clinical/export": "clinical"}
    assert short_names(["/models/mbert"]) == {"/models/mbert": "mbert"}
    assert short_names(["/a/x/mbert", "/b/x/mbert"]) == {"/a/x/mbert": "a/x/mbert", "/b/x/mbert": "b/x/mbert"}
    assert short_names(["/a/m", "/a/m/export"]) == {"/a/m": "m", "/a/m/export": "export"}  # alike once trimmed


def test_results_command_writes_tables_plots_and_hparams(grid_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each run's HParams session is written beside its curves (its events folder), so TensorBoard lists it once."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    (grid_dir / "tensorboard" / "hparams" / "r00").mkdir(parents=True)  # where earlier versions wrote them
    assert cli(["results", str(grid_dir)]) == 0
    out = capsys.readouterr().out
    assert "| model | task | train → eval | train.lr |" in out and "12 finished runs" in out
    assert (grid_dir / "results.md").read_text(encoding="utf-8") in out
    assert (grid_dir / "results.csv").read_text(encoding="utf-8").startswith("model,task,train,eval,train.lr,")
    for name in ("heatmap-ner.png", "bars-ner.png"):
        assert (grid_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (grid_dir / "tensorboard").exists()
    sessions = sorted(grid_dir.glob(f"runs/*/tensorboard/{SESSION_FILE}"))
    assert [p.parts[-3] for p in sessions] == [f"r{k:02d}" for k in range(12)]
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(grid_dir))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == [f"runs/r{k:02d}/tensorboard" for k in range(12)]  # each once, no extras
    events = multiplexer.GetAccumulator("runs/r11/tensorboard")
    start = metadata.parse_session_start_info_plugin_data(
        events.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["model"].string_value == "mbert-med" and start.hparams["seed"].number_value == 2
    assert start.hparams["train.lr"].number_value == pytest.approx(5e-5)
    assert start.hparams["signature"].string_value == "r11"  # a grid run's folder: its signature
    assert events.Scalars("test/f1_es")[0].value == pytest.approx(0.77)
    assert events.Scalars("eval/best_f1")[0].value == pytest.approx(0.7)
    # Run again: the same bytes, so nothing is rewritten and nothing is appended.
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sessions}
    assert cli(["results", str(grid_dir)]) == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sessions} == before
    assert sorted(grid_dir.glob(f"runs/*/tensorboard/*")) == sessions


def test_a_session_beside_curves_keeps_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The session comes at the run's last step: TensorBoard's Python reader drops every event from a step on
    when an earlier step follows it, and a session at step 0 would drop the run's curves."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    run_dir = fake_run(tmp_path / "run")
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:  # the run's own curves, steps 1..3
        for step in (1, 2, 3):
            writer.add_scalar("train/loss", 1.0 / step, step)
    (run_dir / "history.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    assert cli(["results", str(run_dir)]) == 0
    assert "| mbert | ner | es → ro | 1 | 0.500 |" in capsys.readouterr().out
    assert (run_dir / "results.csv").is_file()
    files = sorted(p.name for p in (run_dir / "tensorboard").iterdir())
    assert len(files) == 2 and files[-1] == SESSION_FILE  # read after the run's own
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("test/f1_ro")] == [3]


def _config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))


def test_run_names_say_model_task_languages_seed_and_what_varies_in_the_task(tmp_path: Path) -> None:
    configs = [_config(fake_run(tmp_path / f"r{seed}{lr}", model="/s/pretrain/clinical/export", seed=seed, lr=lr))
               for seed in (0, 1) for lr in (1e-5, 2e-5)]
    configs.append(_config(fake_run(tmp_path / "nl", model="/s/pretrain/clinical/export", train="nl")))
    names = run_names(configs, [f"sig{i}" for i in range(len(configs))])
    assert names == ["clinical · ner-es · es→es+ro · seed 0 · train.lr=1e-05",
                     "clinical · ner-es · es→es+ro · seed 0 · train.lr=2e-05",
                     "clinical · ner-es · es→es+ro · seed 1 · train.lr=1e-05",
                     "clinical · ner-es · es→es+ro · seed 1 · train.lr=2e-05",
                     "clinical · ner-nl · nl→es+ro · seed 0"]  # its task's runs have one learning rate
    assert run_names(configs[:1], ["sig0"]) == ["clinical · ner-es · es→es+ro · seed 0"]  # a lone run: the same


def test_run_names_are_unique_and_keep_keys_of_other_kinds_out(tmp_path: Path) -> None:
    """Runs that would share a name (one kind and language, other data) get what tells them apart, the signature
    as a last resort; a NER run does not carry screening keys, nor a screening run NER's labels."""
    v1, v2 = (_config(fake_run(tmp_path / v, test_root=f"/data/{v}")) for v in ("v1", "v2"))
    assert run_names([v1, v2], ["a", "b"]) == [
        "mbert · ner-es · es→es+ro · seed 0 · data.test.es=/data/v1/es/test · data.test.ro=/data/v1/ro/test",
        "mbert · ner-es · es→es+ro · seed 0 · data.test.es=/data/v2/es/test · data.test.ro=/data/v2/ro/test"]
    long_a = {**v1, "data": {**v1["data"], "test": {"es": "/" + "x" * 60 + "/a/es"}}}
    long_b = {**v1, "data": {**v1["data"], "test": {"es": "/" + "y" * 60 + "/a/es"}}}
    assert run_names([long_a, long_b], ["a", "b"]) == [  # paths shortened alike: the signatures tell them apart
        "mbert · ner-es · es→es · seed 0 · data.test.es=…/a/es · a", "mbert · ner-es · es→es · seed 0 · "
        "data.test.es=…/a/es · b"]
    ner = {**v1, "labels": {"keep": ["CHEM"]}, "screening": {"stride": 1}}
    screening = {**v1, "task": "screening", "labels": None, "screening": {"stride": 2}}
    other = {**screening, "screening": {"stride": 3}}
    names = run_names([ner, screening, other], ["a", "b", "c"])
    assert names == ["mbert · ner-es · es→es+ro · seed 0", "mbert · screening-es · es→es+ro · seed 0 · "
                     "screening.stride=2", "mbert · screening-es · es→es+ro · seed 0 · screening.stride=3"]


def test_folder_names_are_the_names_made_safe(tmp_path: Path) -> None:
    assert folder_name("clinical · ner-ro · ro→es+nl+ro · seed 1", "9f71d98d76") == \
        "clinical · ner-ro · ro→es+nl+ro · seed 1"
    assert folder_name("a/x · ner-es · es→es · seed 0 · data.dev=…/es/dev", "s") == \
        "a-x · ner-es · es→es · seed 0 · data.dev=…-es-dev"
    long_name = folder_name("mbert · ner-es · es→es · seed 0 · labels.keep=" + "→" * 100, "9f71d98d76")
    assert len(long_name.encode()) <= MAX_FOLDER_BYTES and long_name.endswith("… · 9f71d98d76")
    (tmp_path / long_name).mkdir()  # the file system takes it


def test_grid_modules_import_one_way() -> None:
    """table <- hparams, plots <- results: the table module needs none of its renderers (no hidden cycle)."""
    import ast

    grid = Path(__file__).parents[2] / "medtrain" / "grid"
    imports = {path.stem: {node.module for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                           if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medtrain.grid.")}
               for path in grid.glob("*.py")}
    assert imports["table"] == set()
    assert imports["hparams"] == imports["plots"] == {"medtrain.grid.table"}
    for module, uses in imports.items():  # no two modules import each other
        for used in uses:
            assert f"medtrain.grid.{module}" not in imports.get(used.removeprefix("medtrain.grid."), set()), used
