"""The study's report: every run's per-unit test scores grouped per model and language pair, compared with the
baseline (medtrain.study.compare), written as report.md, report.json and differences.png. Only numbers, never text."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.config import config_to_dict
from medtrain.io import atomic_open, write_json_atomic, write_text_atomic
from medtrain.study.compare import Cell, difference, ner_scores, screening_scores
from medtrain.study.config import BASELINE, CompareConfig
from medtrain.study.plan import Say, Study

Key = tuple[str, str, str, str]
"""(task name, model name, training language, test language)."""


METRIC_NAMES = {("ner", "f1"): "exact-offset entity F1", ("screening", "f1"): "patient F1 at the dev threshold",
                ("screening", "auroc"): "patient AUROC", ("screening", "auprc"): "patient AUPRC"}
"""What each table names as its metric: (task kind, TaskConfig.metric) -> words."""


@dataclasses.dataclass
class Collected:
    """What the report reads from the complete runs: per-unit scores, and NER label spaces and per-type scores."""

    cells: dict[Key, Cell]
    label_spaces: dict[tuple[str, str], dict[str, Any]]
    """(task, training language) -> results.json label_space (the same for every model and seed)."""
    per_type: dict[Key, list[dict[str, Any]]]
    """Per seed, results.json test[lang].per_type: the headline metric per entity type."""


def collect_cells(study: Study, grid: Any) -> Collected:
    """Every complete run's per-unit test scores, grouped by (task, model, training -> test language); for NER the
    headline counts from the run's .ann files against the gold read as the run read it (source, labels), and the
    run's label space and per-type scores."""
    from medtrain.config import build_config
    from medtrain.data.ner import read_ner_corpus
    from medtrain.finetune.config import FinetuneConfig

    model_names = {str(Path(os.path.abspath(p))): name for name, p in study.models.items()}
    tasks = {(study.kind(t), str(Path(os.path.abspath(study.split(t, lang, "train"))))): (t, lang)
             for t in study.cfg.tasks for lang in t.train_languages}
    gold: dict[str, list[Any]] = {}
    out = Collected({}, {}, {})
    for run in sorted(grid.runs, key=lambda r: r.config["train"]["seed"]):
        cfg = build_config(FinetuneConfig, run.config)
        train_source = next(iter(cfg.data.sources("train").values()))
        task, train = tasks[(cfg.task, str(Path(os.path.abspath(train_source.path))))]
        results = json.loads((run.run_dir / "results.json").read_text(encoding="utf-8"))
        for lang, test in results["test"].items():
            key = (task.name, model_names[str(Path(os.path.abspath(cfg.model)))], train, lang)
            if cfg.task == "ner":
                source = cfg.data.source("test", lang)
                reading = json.dumps([str(source.path), source.format, config_to_dict(source.columns),
                                      config_to_dict(cfg.labels), lang], sort_keys=True)
                if reading not in gold:  # the gold in the run's label space, read once per way of reading it
                    gold[reading] = read_ner_corpus(source.path, source.format, source.columns, cfg.labels,
                                                    lang).documents
                scores = ner_scores(run.run_dir, lang, gold[reading], set(test["scored_types"]))
                out.label_spaces[(task.name, train)] = results["label_space"]
                out.per_type.setdefault(key, []).append(test["per_type"])
            else:
                scores = screening_scores(run.run_dir, lang, test["threshold"], task.metric)
            out.cells.setdefault(key, Cell([])).runs.append(scores)
    return out


def compare(study: Study, cells: dict[Key, Cell]) -> dict[str, Any]:
    """Per task: each model's mean and std per language pair, the winner, and each variant's difference."""
    out: dict[str, Any] = {}
    for task in study.cfg.tasks:
        pairs = [(t, e) for t in task.train_languages for e in task.test_languages]
        scores = {m: {f"{t}->{e}": _stats(cells[(task.name, m, t, e)]) for t, e in pairs} for m in study.models}
        in_language = [f"{t}->{t}" for t in task.train_languages if t in task.test_languages] or \
                      [f"{t}->{e}" for t, e in pairs]
        primary = {m: _mean([scores[m][p]["mean"] for p in in_language]) for m in study.models}
        ranked = sorted((v, m) for m, v in primary.items() if v is not None)
        diffs = [{"variant": v, "train": t, "test": e, "in_language": t == e,
                  **difference(cells[(task.name, BASELINE, t, e)], cells[(task.name, v, t, e)], study.cfg.compare)}
                 for v in study.cfg.variants for t, e in pairs]
        out[task.name] = {"kind": study.kind(task), "metric": task.metric,
                          "metric_name": METRIC_NAMES[(study.kind(task), task.metric)], "primary_pairs": in_language,
                          "scores": scores, "primary": primary, "winner": ranked[-1][1] if ranked else None,
                          "differences": diffs}
    return out


def _stats(cell: Cell) -> dict[str, Any]:
    return {"mean": cell.mean(), "std": cell.std(), "seeds": cell.values()}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


# ----------------------------------------------------------------------------- stage 5: report


_F1_WORDS = "exact-offset entity F1 for NER, patient F1 at the dev-chosen threshold for screening"


def _fmt(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def results_table(study: Study, comparison: dict[str, Any]) -> str:
    """Task x (training -> test language) rows, one column per model: mean ± std over seeds; bold: best."""
    models = list(study.models)
    rows = []
    for task, result in comparison.items():
        for pair in next(iter(result["scores"].values())):
            stats = [result["scores"][m][pair] for m in models]
            best = max((s["mean"] for s in stats if s["mean"] is not None), default=None)
            cells = [("**{}**" if s["mean"] == best and len(models) > 1 else "{}").format(
                _fmt(s["mean"]) + (f" ± {s['std']:.3f}" if s["std"] is not None else "")) for s in stats]
            rows.append([task, result["metric_name"], pair.replace("->", " → "), *cells])
    return "\n".join(_table(["task", "metric", "train → test", *models], rows)) + "\n"


def _differences_section(comparison: dict[str, Any], cfg: CompareConfig) -> list[str]:
    level = f"{100 * (1 - cfg.alpha):.0f}%"
    rows = [[task, result["metric_name"], d["variant"], f"{d['train']} → {d['test']}", _fmt(d["delta"], True),
             f"[{_fmt(d['lo'], True)}, {_fmt(d['hi'], True)}]",
             "yes" if d["lo"] is not None and (d["lo"] > 0 or d["hi"] < 0) else "no"]
            for task, result in comparison.items() for d in result["differences"]]
    return ["## Difference from the baseline", "",
            f"Variant minus baseline in the task's metric; {level} multi-bootstrap interval over test units (paired) "
            f"and fine-tuning seeds ({cfg.bootstrap} replicates). *Outside*: the interval excludes 0.", "",
            *_table(["task", "metric", "variant", "train → test", "difference", f"{level} interval", "outside"],
                    rows),
            "", "![differences](differences.png)", ""]


def _winners_section(comparison: dict[str, Any]) -> list[str]:
    rows = []
    for task, result in comparison.items():
        winner = result["winner"]
        diffs = [d for d in result["differences"] if d["variant"] == winner and
                 f"{d['train']}->{d['test']}" in result["primary_pairs"]]
        versus = "; ".join(f"{_fmt(d['delta'], True)} [{_fmt(d['lo'], True)}, {_fmt(d['hi'], True)}]" for d in diffs)
        rows.append([task, result["metric_name"], ", ".join(p.replace("->", " → ") for p in result["primary_pairs"]),
                     winner or "n/a", _fmt(result["primary"].get(winner)), versus or "(is the baseline)"])
    return ["## Winner per task", "", "On the in-language pairs (mean over seeds):", "",
            *_table(["task", "metric", "pairs", "winner", "score", "vs baseline"], rows), ""]


def _matrix_section(study: Study, comparison: dict[str, Any]) -> list[str]:
    lines = ["## Cross-lingual matrix", "", "Mean over seeds; rows: training language, columns: test language.", ""]
    for task in study.cfg.tasks:
        result = comparison[task.name]
        header = ["model", "train", *task.test_languages]
        rows = [[m, t, *(_fmt(result["scores"][m][f"{t}->{e}"]["mean"]) for e in task.test_languages)]
                for m in study.models for t in task.train_languages]
        lines += [f"### {task.name} ({result['metric_name']})", "", *_table(header, rows), ""]
    plots = sorted((study.grid_dir / "plots").glob("heatmap-*.png"))
    lines += [f"![{p.stem}]({p.relative_to(study.out)})" for p in plots]
    return lines + ["", f"(The heatmaps show each run's test F1: {_F1_WORDS}, whichever metric a task compares.)",
                    ""] if plots else lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "-"


def _label_space_section(study: Study, collected: Collected) -> list[str]:
    """Per NER task and training language: each test language's types after the label map, the shared (scored)
    ones, the unscored ones and the entities that labels.keep dropped."""
    lines = ["## Label spaces", "",
             "NER types after each task's `labels` map, per training → test language. Only the shared types are "
             "scored: a test language's other types count neither as gold nor as predictions.", ""]
    for task in study.cfg.tasks:
        spaces = {train: space for (name, train), space in collected.label_spaces.items() if name == task.name}
        if not spaces:
            continue
        keep = f"; kept types: {', '.join(task.labels.keep)}" if task.labels and task.labels.keep else ""
        rows = [[f"{train} → {lang}", ", ".join(space["train"]) or "-", ", ".join(types) or "-",
                 ", ".join(space["scored"][lang]) or "-", ", ".join(space["unscored"][lang]) or "-",
                 _counts(space["dropped"]["test"].get(lang, {}))]
                for train, space in spaces.items() for lang, types in space["test"].items()]
        mapped = [f"{lang}: " + ", ".join(f"{source} → {shared}" for source, shared in rename.items())
                  for lang, rename in (task.labels.map.items() if task.labels else ())]
        lines += [f"### {task.name}{keep}", "", *(f"- map {line}" for line in mapped), *([""] if mapped else []),
                  *_table(["train → test", "training types", "test types", "scored (shared)", "unscored",
                           "dropped by keep (test)"], rows), ""]
    return lines if len(lines) > 4 else []


def _per_type_section(study: Study, collected: Collected) -> list[str]:
    """Per NER task: the headline metric per entity type, per model, mean over seeds."""
    lines = ["## Per-type scores", "", f"NER only: {METRIC_NAMES[('ner', 'f1')]} per entity type (the scored types), "
             "mean over seeds; support: gold entities in the test set.", ""]
    models = list(study.models)
    for task in study.cfg.tasks:
        if study.kind(task) != "ner":
            continue
        rows = []
        for train in task.train_languages:
            for lang in task.test_languages:
                seeds = {m: collected.per_type.get((task.name, m, train, lang), []) for m in models}
                types = sorted({t for runs in seeds.values() for per_type in runs for t in per_type})
                for entity_type in types:
                    support = next((p[entity_type]["support"] for runs in seeds.values() for p in runs
                                    if entity_type in p), 0)
                    rows.append([f"{train} → {lang}", entity_type, str(support),
                                 *(_fmt(_mean([p[entity_type]["f1"] if entity_type in p else None for p in seeds[m]]))
                                   for m in models)])
        if rows:
            lines += [f"### {task.name} ({METRIC_NAMES[('ner', 'f1')]} per type)", "",
                      *_table(["train → test", "type", "support", *models], rows), ""]
    return lines if len(lines) > 4 else []


def _analysis_section(study: Study) -> list[str]:
    text = (study.analysis_dir / "analysis.md").read_text(encoding="utf-8")
    demoted = [("#" + line) if line.startswith("#") else line for line in text.splitlines()]
    plots = [p for p in ("overlap.png", "perplexity.png") if (study.analysis_dir / p).is_file()]
    return ["## Why: the data behind the differences", "",
            "Masked-LM perplexity on each task's training text, and how much of that text each pretraining corpus "
            "covers, explain which adaptation helps where.", "", *demoted, "",
            *(f"![{p}](analysis/{p})" for p in plots), ""]


def _models_section(study: Study) -> list[str]:
    cfg = study.cfg
    lines = ["## Models", ""]
    if cfg.baseline.model is not None:
        lines.append(f"- **{BASELINE}**: {cfg.baseline.model} (un-adapted)")
    else:
        lines.append(f"- **{BASELINE}**: pretrained here on {', '.join(cfg.baseline.pretrain.corpora)} "
                     f"({study.pretrain[BASELINE].train.max_steps} steps)")
    for name, run in cfg.variants.items():
        lines.append(f"- **{name}**: {BASELINE} + {study.pretrain[name].train.max_steps} steps on "
                     f"{', '.join(f'{c} ({w:g})' for c, w in run.corpora.items())}")
    seeds = " ".join(map(str, cfg.seeds))
    lines += ["", f"Fine-tuned on {len(cfg.tasks)} tasks with seeds {seeds}; the table shows mean ± std over seeds.",
              ""]
    return lines


def plot_differences(comparison: dict[str, Any], path: Path) -> None:
    """Each variant's difference from the baseline with its interval, one row per task and language pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{task} {d['variant']} {d['train']}→{d['test']}", d) for task, r in comparison.items()
            for d in r["differences"] if d["delta"] is not None]
    figure, ax = plt.subplots(figsize=(6.5, 0.8 + 0.3 * len(rows)), layout="constrained")
    for i, (_, d) in enumerate(rows):
        lo, hi = d["lo"] if d["lo"] is not None else d["delta"], d["hi"] if d["hi"] is not None else d["delta"]
        ax.errorbar(d["delta"], i, xerr=[[d["delta"] - lo], [hi - d["delta"]]], fmt="o", capsize=3,
                    color="tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("variant - baseline (task metric), with interval")
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)
    plt.close(figure)


def _newer(path: Path, inputs: list[Path]) -> bool:
    return path.is_file() and all(p.stat().st_mtime_ns <= path.stat().st_mtime_ns for p in inputs)


def stage_report(study: Study, say: Say) -> str:
    """Write report.md (+ report.json, differences.png, the grid's table and plots); returns the results table."""
    from medtrain.grid.results import write_results
    from medtrain.grid.spec import load_grid

    grid = load_grid(study.grid_file)
    inputs = [run.run_dir / "results.json" for run in grid.runs] + [study.analysis_dir / "analysis.json"]
    summary = study.out / "report.json"
    if _newer(study.report, inputs) and summary.is_file():
        say(f"[5/5] report: {study.report} is complete")
        return json.loads(summary.read_text(encoding="utf-8"))["table"]
    say(f"[5/5] report: comparing {len(grid.runs)} runs ({study.cfg.compare.bootstrap} bootstrap replicates each)")
    collected = collect_cells(study, grid)
    comparison = compare(study, collected.cells)
    table = results_table(study, comparison)
    all_runs = write_results(study.grid_dir).markdown
    plot_differences(comparison, study.out / "differences.png")
    lines = [f"# Study report: {study.out.name}", "", *_models_section(study), "## Results", "", table,
             *_winners_section(comparison), *_differences_section(comparison, study.cfg.compare),
             *_matrix_section(study, comparison), *_label_space_section(study, collected),
             *_per_type_section(study, collected), *_analysis_section(study),
             "## All fine-tuning runs", "",
             f"From `medtrain results {study.grid_dir}`; its F1, precision and recall are {_F1_WORDS} "
             "(the tables above name each task's own metric):", "", all_runs]
    write_json_atomic(summary, {"table": table, "tasks": comparison})
    write_text_atomic(study.report, "\n".join(lines))
    return table
