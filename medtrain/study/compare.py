"""Compare fine-tuned models on the same test set: per-unit scores and a paired multi-bootstrap interval.

Difference from the baseline, with a confidence interval (the multi-bootstrap of Sellam et al., "The MultiBERTs",
ICLR 2022): each bootstrap replicate resamples the test units (documents for NER, patients for screening) with
replacement, the SAME units for both models (the test set is shared, so the comparison is paired), and resamples
each model's fine-tuning seeds with replacement, independently (a seed does not pair two models). The statistic
is (variant's mean over its drawn seeds) - (baseline's mean over its drawn seeds), each seed's metric computed on
the drawn units from that run's own per-unit predictions. The interval thus covers both test-set sampling and
fine-tuning seed variance; a bootstrap over units alone would call a lucky seed a win, one over seeds alone would
ignore how few test documents there are. Only numbers reach logs and the report, never text.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medtrain import metrics
from medtrain.errors import UserError
from medtrain.study.config import CompareConfig


@dataclasses.dataclass(frozen=True)
class RunScores:
    """One run's test predictions in one language, per unit, and the metric over any subset of those units."""

    units: tuple[str, ...]
    rows: np.ndarray
    metric: Callable[[np.ndarray], float | None]

    def value(self, index: np.ndarray | None = None) -> float | None:
        return self.metric(self.rows if index is None else self.rows[index])


def screening_scores(run_dir: Path, lang: str, threshold: float, metric: str) -> RunScores:
    """Patients from predictions/<lang>.csv: rows of (label, score); F1 at the run's dev-chosen threshold."""
    with open(run_dir / "predictions" / f"{lang}.csv", encoding="utf-8", newline="") as f:
        records = sorted((r["patient_id"], int(r["label"]), float(r["score"])) for r in csv.DictReader(f))
    rows = np.array([(label, score) for _, label, score in records], dtype=float).reshape(-1, 2)
    return RunScores(tuple(r[0] for r in records), rows, metrics.classification_metric(metric, threshold))


def ner_scores(run_dir: Path, lang: str, gold: list[Any], types: set[str]) -> RunScores:
    """Documents (sentences when the set is one document): exact-offset entity counts (tp, predicted, gold) of
    `types` (the run's scored types for lang), the run's BRAT predictions against the gold documents' entities,
    counted per unit as fine-tuning counts them (the headline F1)."""
    from medtrain.data.ner import read_ner
    from medtrain.finetune.ner import span_unit_counts

    predicted = {d.doc_id: d for d in read_ner(run_dir / "predictions" / lang, "brat")}
    missing = [doc.doc_id for doc in gold if doc.doc_id not in predicted]
    if missing or len(predicted) != len(gold):
        raise UserError(f"the predictions of {lang} do not match its gold documents (first missing: "
                        f"{(missing or ['none'])[0]})", run_dir / "predictions" / lang)
    per_unit = span_unit_counts(gold, {i: d.entities for i, d in predicted.items()}, types)
    units, rows = tuple(per_unit), [metrics.micro_counts(counts) for counts in per_unit.values()]
    return RunScores(units, np.array(rows, dtype=float).reshape(-1, 3), metrics.micro_metric("f1"))


# ----------------------------------------------------------------------------- comparison


@dataclasses.dataclass
class Cell:
    """One model on one (task, training language -> test language): a RunScores per seed."""

    runs: list[RunScores]

    def values(self) -> list[float | None]:
        return [r.value() for r in self.runs]

    def mean(self) -> float | None:
        known = [v for v in self.values() if v is not None]
        return float(np.mean(known)) if known else None

    def std(self) -> float | None:
        known = [v for v in self.values() if v is not None]
        return float(np.std(known, ddof=1)) if len(known) > 1 else None

    def resampled(self, units: np.ndarray, rng: np.random.Generator) -> float | None:
        """Mean over seeds drawn with replacement, each seed's metric on the drawn units."""
        values = [self.runs[i].value(units) for i in rng.integers(0, len(self.runs), len(self.runs))]
        return None if any(v is None for v in values) else float(np.mean(values))


def difference(baseline: Cell, variant: Cell, cfg: CompareConfig) -> dict[str, float | None]:
    """variant - baseline: the point difference of seed means, and its multi-bootstrap interval."""
    units = {r.units for r in baseline.runs + variant.runs}
    if len(units) != 1:
        raise UserError("the compared runs were tested on different documents or patients")
    n = len(next(iter(units)))
    rng = np.random.default_rng(cfg.seed)
    diffs = []
    for _ in range(cfg.bootstrap):
        index = rng.integers(0, n, n)
        a, b = baseline.resampled(index, rng), variant.resampled(index, rng)
        if a is not None and b is not None:
            diffs.append(b - a)
    a, b = baseline.mean(), variant.mean()
    delta = None if a is None or b is None else b - a
    if len(diffs) < cfg.bootstrap / 2:
        return {"delta": delta, "lo": None, "hi": None}
    lo, hi = np.quantile(diffs, [cfg.alpha / 2, 1 - cfg.alpha / 2])
    return {"delta": delta, "lo": float(lo), "hi": float(hi)}
