"""The study's fine-tuning runs gathered per (task, model, training language, test language) cell, and compared
with the baseline and one another (paired hierarchical bootstrap, Holm; medtrain.study.compare): what the report
(medtrain.study.report) writes out. Only numbers, never text."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.config import config_to_dict
from medtrain.study.compare import Cell, Difference, difference, holm, holm_levels, ner_scores, screening_scores, \
    winner
from medtrain.study.config import CompareConfig
from medtrain.study.plan import Study

Key = tuple[str, str, str, str]
"""(task name, model name, training language, test language); model: baseline or a variant (all its replicates)."""

METRIC_NAMES = {("ner", "f1"): "exact-offset entity F1", ("screening", "f1"): "patient F1 at the dev threshold",
                ("screening", "auroc"): "patient AUROC", ("screening", "auprc"): "patient AUPRC"}
"""What each table names as its metric: (task kind, TaskConfig.metric) -> words."""


@dataclasses.dataclass
class Collected:
    """What the report reads from the complete runs: per-unit scores, and NER label spaces and per-type scores."""

    cells: dict[Key, Cell]
    """Per model, its runs grouped by pretraining replicate."""
    label_spaces: dict[tuple[str, str], dict[str, Any]]
    """(task, training language) -> results.json label_space (the same for every model and seed)."""
    per_type: dict[Key, list[dict[str, Any]]]
    """Per run (every replicate and seed), results.json test[lang].per_type: the headline metric per entity type."""


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
    runs: dict[Key, dict[str, list[Any]]] = {}  # per model cell: replicate -> its runs' scores
    for run in sorted(grid.runs, key=lambda r: r.config["train"]["seed"]):
        cfg = build_config(FinetuneConfig, run.config)
        train_source = next(iter(cfg.data.sources("train").values()))
        task, train = tasks[(cfg.task, str(Path(os.path.abspath(train_source.path))))]
        results = json.loads((run.run_dir / "results.json").read_text(encoding="utf-8"))
        for lang, test in results["test"].items():
            replicate = model_names[str(Path(os.path.abspath(cfg.model)))]
            key = (task.name, study.model_of[replicate], train, lang)
            if cfg.task == "ner":
                source = cfg.data.source("test", lang)
                reading = json.dumps([str(source.path), source.format, config_to_dict(source.columns),
                                      config_to_dict(cfg.labels), lang], sort_keys=True)
                if reading not in gold:  # the gold in the run's label space, read once per way of reading it
                    gold[reading] = read_ner_corpus(source.path, source.format, source.columns, cfg.labels,
                                                    lang, as_written=True).documents  # as the run scored it
                scores = ner_scores(run.run_dir, lang, gold[reading], set(test["scored_types"]))
                out.label_spaces[(task.name, train)] = results["label_space"]
                out.per_type.setdefault(key, []).append(test["per_type"])
            else:
                scores = screening_scores(run.run_dir, lang, test["threshold"], task.metric)
            runs.setdefault(key, {}).setdefault(replicate, []).append(scores)
    out.cells = {key: Cell([by_replicate[r] for r in study.replicates[key[1]] if r in by_replicate])
                 for key, by_replicate in runs.items()}
    return out


def compare(study: Study, cells: dict[Key, Cell]) -> dict[str, Any]:
    """Per task: each model's mean and std per language pair; every configured pair of models compared on every
    language pair (b - a, hierarchical bootstrap), the task's comparisons corrected together (Holm); and per
    in-language pair the model that beats every other one after correction, or the tied models."""
    cfg = study.cfg.compare
    out: dict[str, Any] = {}
    models = list(study.replicates)
    for task in study.cfg.tasks:
        pairs = [(t, e) for t in task.train_languages for e in task.test_languages]
        scores = {m: {f"{t}->{e}": _stats(cells[(task.name, m, t, e)]) for t, e in pairs} for m in models}
        in_language = [f"{t}->{t}" for t in task.train_languages if t in task.test_languages] or \
                      [f"{t}->{e}" for t, e in pairs]
        found = [(a, b, t, e, difference(cells[(task.name, a, t, e)], cells[(task.name, b, t, e)], cfg))
                 for a, b in study.cfg.comparisons() for t, e in pairs]
        diffs = _judged(found, cfg)
        out[task.name] = {"kind": study.kind(task), "metric": task.metric,
                          "metric_name": METRIC_NAMES[(study.kind(task), task.metric)], "primary_pairs": in_language,
                          "scores": scores, "differences": diffs,
                          "winners": {p: _winner(models, [d for d in diffs if f"{d['train']}->{d['test']}" == p])
                                      for p in in_language}}
    return out


def _judged(found: list[tuple[str, str, str, str, Difference]], cfg: CompareConfig) -> list[dict[str, Any]]:
    """Each difference with its raw interval, p-value and decision, and the same after the task's correction."""
    p_values = [d.p_value for *_, d in found]
    adjusted = holm(p_values) if cfg.correction == "holm" else p_values
    levels = holm_levels(p_values, cfg.alpha) if cfg.correction == "holm" else [cfg.alpha] * len(found)
    rows = []
    for (a, b, t, e, d), p_adj, level in zip(found, adjusted, levels):
        lo, hi = d.interval(cfg.alpha) or (None, None)
        lo_adj, hi_adj = (d.interval(level) or (None, None)) if level is not None else (None, None)
        rows.append({"variant": b, "against": a, "train": t, "test": e, "in_language": t == e, "delta": d.delta,
                     "lo": lo, "hi": hi, "p": d.p_value, "p_adjusted": p_adj, "lo_adjusted": lo_adj,
                     "hi_adjusted": hi_adj, "significant": d.p_value is not None and d.p_value < cfg.alpha,
                     "significant_adjusted": p_adj is not None and p_adj < cfg.alpha, "counts": d.counts})
    return rows


def _winner(models: list[str], diffs: list[dict[str, Any]]) -> dict[str, Any]:
    """The model that beats every other one after correction on this language pair, else the tied models."""
    beats = {(d["variant"], d["against"]) if d["delta"] > 0 else (d["against"], d["variant"])
             for d in diffs if d["significant_adjusted"] and d["delta"] is not None}
    best, tied = winner(models, beats)
    return {"winner": best, "tied": tied}


def _stats(cell: Cell) -> dict[str, Any]:
    return {"mean": cell.mean(), "std": cell.std(), "seeds": cell.values()}


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None
