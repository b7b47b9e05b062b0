"""A results table from run folders, without plotting or torch: which runs, which columns differ, which
row is best. `results.py` renders it; `names.py` names single runs from the same configs.

Besides the row's model, task and languages, the table shows only the config keys whose values differ across
the runs (dora's rule): a grid over learning rates gets a train.lr column, one over seeds gets none (seeds are
what the mean and std are taken over). Where one task and language pair has several rows, the best mean F1
is marked.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medtrain.errors import UserError
from medtrain.finetune import RESULTS

METRICS = ("f1", "precision", "recall")
EXPORT = "export"
"""The folder a pretraining run writes its model to (RUN_DIR/export): a model is named by its run."""
NOT_PARAMETERS = {"output_dir", "cache_dir", "progress", "tensorboard_dir", "model", "task", "train.seed"}
"""Bookkeeping, and what each row names anyway (model, task) or averages over (the seed)."""
EVENTS = "tensorboard"
"""A run's TensorBoard events: RUN_DIR/tensorboard, or the config's tensorboard_dir where it has one (a grid's
runs: GRID_DIR/tensorboard/<the run's name>, medtrain/grid/tensorboard.py)."""
SPLIT_PATHS = ("data.train.", "data.dev.", "data.test.")
"""Named by the row's languages; shown only where they tell apart runs that would otherwise be averaged."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    run_dir: Path
    model: str
    task: str
    train: str
    """Training languages, joined with +."""
    seed: int
    params: dict[str, Any]
    """The run's config flattened to dotted keys (without NOT_PARAMETERS), plus "dev": dev languages."""
    scores: dict[str, dict[str, float | None]]
    """Evaluation language -> test metric -> value (no metrics yet for a run that has not finished)."""
    dev_f1: float | None
    events_dir: Path
    """Where the run's TensorBoard events are (EVENTS)."""


@dataclasses.dataclass
class Row:
    model: str
    task: str
    train: str
    eval: str
    settings: tuple[Any, ...]
    """Values of Table.columns, in order."""
    runs: list[RunResult]
    stats: dict[str, tuple[float | None, float | None]]
    """Metric -> (mean, sample std; None for one run)."""
    best: bool = False


@dataclasses.dataclass
class Table:
    columns: list[str]
    rows: list[Row]
    models: dict[str, str]
    """Model path -> the short name the table uses."""


# ----------------------------------------------------------------------------- reading runs


def find_run_dirs(folder: Path) -> list[Path]:
    """The folder itself if it is a finished run, else every finished run below it."""
    if (folder / RESULTS).is_file():
        return [folder]
    return sorted(p.parent for p in folder.rglob(RESULTS) if not any(part.startswith(".") for part in p.parts))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def load_run(run_dir: Path) -> RunResult:
    try:
        results = json.loads((run_dir / RESULTS).read_text(encoding="utf-8"))
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the run's {RESULTS} and config.yaml ({exc.__class__.__name__})",
                        run_dir) from None
    scores = {lang: {m: (r.get(m) or {}).get("value") for m in METRICS} for lang, r in results["test"].items()}
    return describe(config, run_dir, scores, results["dev"].get("f1"))


def describe(config: dict[str, Any], run_dir: Path, scores: dict[str, dict[str, float | None]] | None = None,
             dev_f1: float | None = None) -> RunResult:
    """A run as the table sees it, from its resolved config (finished or not: `medtrain grid status` too)."""
    params = {k: v for k, v in flatten(config).items() if k not in NOT_PARAMETERS}
    if config.get("task") != "screening":
        params = {k: v for k, v in params.items() if not k.startswith("screening.")}
    params["dev"] = "+".join(config["data"]["dev"])
    tests = {lang: {} for lang in config["data"]["test"]}
    return RunResult(run_dir, str(config["model"]), config["task"], "+".join(config["data"]["train"]),
                     config["train"]["seed"], params, tests if scores is None else scores, dev_f1,
                     Path(config.get("tensorboard_dir") or run_dir / EVENTS))


# ----------------------------------------------------------------------------- the table


def short_names(paths: Sequence[str]) -> dict[str, str]:
    """The shortest path endings that still tell the models apart, a pretraining run's export/ folder named by
    its run (…/pretrain/clinical/export -> clinical; …/mbert/export vs …/mbert-med/export -> mbert, mbert-med)."""
    unique = sorted(set(paths))
    full = {p: Path(p).parts for p in unique}
    trimmed = {p: parts[:-1] if len(parts) > 1 and parts[-1] == EXPORT else parts for p, parts in full.items()}
    for split in (trimmed, full):  # the full paths where trimming makes two alike (…/m and …/m/export)
        for depth in range(1, max(len(parts) for parts in split.values()) + 1):
            names = {p: "/".join(parts[-depth:]) for p, parts in split.items()}
            if len(set(names.values())) == len(unique):
                return names
    return {p: p for p in unique}


def differing_columns(runs: Sequence[RunResult]) -> list[str]:
    """Config keys whose values differ across runs. The dev languages only where they differ for one model,
    task and training languages (not when they just follow the training language); split paths only where
    runs sharing every other value and a seed differ in them (so they are not averaged as if seeds)."""
    keys = sorted({k for r in runs for k in r.params})
    differ = [k for k in keys if not k.startswith(SPLIT_PATHS) and k != "dev" and _varies(runs, k)]
    by_training: dict[tuple[Any, ...], list[RunResult]] = defaultdict(list)
    for r in runs:
        by_training[(r.model, r.task, r.train)].append(r)
    if any(_varies(group, "dev") for group in by_training.values()):
        differ.append("dev")
    groups: dict[tuple[Any, ...], list[RunResult]] = defaultdict(list)
    for r in runs:
        groups[(r.model, r.task, r.train, r.seed, *(_value(r, k) for k in differ))].append(r)
    paths = {k for group in groups.values() if len(group) > 1
             for k in keys if k.startswith(SPLIT_PATHS) and _varies(group, k)}
    return differ + sorted(paths)


def _varies(runs: Sequence[RunResult], key: str) -> bool:
    return len({_value(r, key) for r in runs}) > 1


def _value(run: RunResult, key: str) -> str:
    """Hashable and comparable; "" where the run has no such key."""
    value = run.params.get(key, "")
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return None, None
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else None


def build_table(runs: Sequence[RunResult]) -> Table:
    if not runs:
        raise UserError("no finished runs (no results.json) to tabulate")
    columns = differing_columns(runs)
    models = short_names([r.model for r in runs])
    groups: dict[tuple[Any, ...], list[tuple[RunResult, dict[str, float | None]]]] = defaultdict(list)
    for run in runs:
        settings = tuple(run.params.get(k, "") for k in columns)
        for lang, scores in run.scores.items():
            key = (models[run.model], run.task, run.train, lang, json.dumps(settings, sort_keys=True))
            groups[key].append((run, scores))
    rows = []
    for (model, task, train, lang, settings), members in sorted(groups.items()):
        members.sort(key=lambda member: member[0].seed)
        stats = {m: _stats([scores[m] for _, scores in members]) for m in METRICS}
        rows.append(Row(model, task, train, lang, tuple(json.loads(settings)), [r for r, _ in members], stats))
    _mark_best(rows)
    return Table(columns, rows, models)


def _mark_best(rows: list[Row]) -> None:
    """Within each (task, training -> evaluation language) with several rows, the highest mean F1."""
    cells: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for row in rows:
        cells[(row.task, row.train, row.eval)].append(row)
    for cell in cells.values():
        means = [r.stats["f1"][0] for r in cell if r.stats["f1"][0] is not None]
        leaders = [r for r in cell if means and r.stats["f1"][0] == max(means)]
        if len(leaders) < len(cell):  # a cell where every row ties has no best
            for row in leaders:
                row.best = True


def cell(value: Any) -> str:
    """A value as text in a table cell or a name."""
    return value if isinstance(value, str) else json.dumps(value)
