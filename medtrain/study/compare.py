"""Compare fine-tuned models on the same test set: per-unit scores, a paired hierarchical bootstrap, Holm.

A model may be pretrained several times (pretraining replicates, e.g. pretraining seeds) and each replicate
fine-tuned with several seeds. The difference b - a between two models comes with bootstrap draws, the multi-
bootstrap of Sellam et al. ("The MultiBERTs", ICLR 2022) taken one level up. Each bootstrap replicate
1. resamples the test units (documents for NER, patients for screening) with replacement, the SAME units for
   both models (the test set is shared, so the comparison is paired);
2. for each model independently (neither a pretraining replicate nor a seed pairs two models), resamples its
   pretraining replicates with replacement and, within each drawn replicate, that replicate's fine-tuning seeds
   with replacement;
3. scores each drawn run on the drawn units from that run's own per-unit predictions, and takes the model's mean
   over its drawn replicates of the mean over each one's drawn seeds (a replicate drawn twice counts twice).
The statistic is b's resampled mean - a's. With one pretraining replicate step 2 draws seeds only: the plain
multi-bootstrap (drawn as arrays now, so a seed gives other random numbers than the former draw-by-draw loop,
from the same distribution). The draws thus cover test-set sampling, fine-tuning seeds and pretraining runs: a
bootstrap over units alone would call a lucky seed a win, one over runs alone would ignore how few test
documents there are, and pooling a model's runs as seeds would ignore that one replicate's runs share its luck.

From the draws: a percentile interval and a two-sided p-value per difference (Difference); Holm's step-down
over the differences a report judges together (holm, holm_levels) and the model that beats all others (winner).
NER rows are additive counts, so the metric of every draw at once is a (draws x units histogram) @ (counts)
product; other metrics are computed draw by draw. Only numbers reach logs and the report, never text.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Sequence
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
    totals_metric: Callable[[np.ndarray], np.ndarray] | None = None
    """Set where the rows are additive counts and the metric depends on their column sums only (NER): the metric
    of each row of a (draws x columns) array of totals, nan where undefined, so that all draws go at once."""

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
    from medtrain.data.ner import read_ner_corpus
    from medtrain.data.ner.scoring import span_unit_counts

    predicted = {d.doc_id: d for d in read_ner_corpus(run_dir / "predictions" / lang, "brat", as_written=True)
                 .documents}
    missing = [doc.doc_id for doc in gold if doc.doc_id not in predicted]
    if missing or len(predicted) != len(gold):
        raise UserError(f"the predictions of {lang} do not match its gold documents (first missing: "
                        f"{(missing or ['none'])[0]})", run_dir / "predictions" / lang)
    per_unit = span_unit_counts(gold, {i: d.entities for i, d in predicted.items()}, types)
    units, rows = tuple(per_unit), [metrics.micro_counts(counts) for counts in per_unit.values()]
    return RunScores(units, np.array(rows, dtype=float).reshape(-1, 3), metrics.micro_metric("f1"),
                     micro_f1_of_totals)


def micro_f1_of_totals(totals: np.ndarray) -> np.ndarray:
    """metrics.micro_metric("f1") of each row of (tp, predicted, gold) totals, in metrics.prf's arithmetic (the
    same floats, 0 where undefined)."""
    tp, predicted, gold = totals.T
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(gold > 0, tp / gold, 0.0)
        return np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)


# ----------------------------------------------------------------------------- comparison


_CHUNK = 2**21
"""Draws x units per block of bootstrap draws: bounds the memory of the drawn units on large test sets."""


@dataclasses.dataclass
class Cell:
    """One model on one (task, training language -> test language): per pretraining replicate, a RunScores per
    fine-tuning seed."""

    replicates: list[list[RunScores]]

    @property
    def runs(self) -> list[RunScores]:
        return [run for seeds in self.replicates for run in seeds]

    def values(self) -> list[float | None]:
        """Every run's value, replicate after replicate."""
        return [r.value() for r in self.runs]

    def mean(self) -> float | None:
        """Mean over replicates of the mean over that replicate's seeds (each over its defined values)."""
        means = [np.mean(known) for seeds in self.replicates
                 if (known := [v for v in (r.value() for r in seeds) if v is not None])]
        return float(np.mean(means)) if means else None

    def std(self) -> float | None:
        """Over all runs: seed and pretraining variation together."""
        known = [v for v in self.values() if v is not None]
        return float(np.std(known, ddof=1)) if len(known) > 1 else None

    def counts(self) -> dict[str, Any]:
        """Pretraining replicates, and fine-tuning seeds per replicate."""
        return {"replicates": len(self.replicates), "seeds": [len(seeds) for seeds in self.replicates]}

    def draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """`size` bootstrap draws of runs: replicates with replacement, then each drawn replicate's seeds with
        replacement. Returns (draws x runs): each run's weight in the draw's resampled mean (0: not drawn)."""
        sizes = np.array([len(seeds) for seeds in self.replicates])
        offsets = np.cumsum(sizes) - sizes
        picked = rng.integers(0, len(sizes), (size, len(sizes)))  # replicates
        k = sizes[picked][..., None]
        drawn = rng.integers(0, k, (size, len(sizes), sizes.max()))  # seeds within each: the first k count
        used = np.arange(sizes.max()) < k
        run = (np.arange(size)[:, None, None] * sizes.sum() + offsets[picked][..., None] + drawn)[used]
        weight = np.broadcast_to(1 / (len(sizes) * k), drawn.shape)[used]
        return np.bincount(run, weight, minlength=size * sizes.sum()).reshape(size, sizes.sum())


@dataclasses.dataclass(frozen=True)
class Difference:
    """b - a on one test set: the point difference of the models' means and the defined bootstrap draws."""

    delta: float | None
    draws: np.ndarray
    bootstrap: int
    """Draws asked for; those where a drawn run's metric was undefined are not in `draws`."""
    counts: dict[str, Any]
    """units, and each model's replicates and seeds per replicate (Cell.counts) as "a" and "b"."""

    @property
    def defined(self) -> bool:
        """At least half the draws are defined: below that the draws describe an odd subset of resamples."""
        return len(self.draws) > 0 and len(self.draws) >= self.bootstrap / 2

    def interval(self, alpha: float) -> tuple[float, float] | None:
        """The percentile interval at confidence 1 - alpha."""
        if not self.defined:
            return None
        lo, hi = np.quantile(self.draws, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)

    @property
    def p_value(self) -> float | None:
        """Two-sided: 2 x the smaller share of draws on either side of 0 (0 counts on both), as (count + 1) /
        (draws + 1) so that it is never 0. p < alpha implies that interval(alpha) excludes 0 (the + 1 makes the
        converse fail, by about one draw, at the boundary: the p-value is the stricter)."""
        if not self.defined:
            return None
        tail = min(int(np.sum(self.draws <= 0)), int(np.sum(self.draws >= 0)))
        return min(1.0, 2 * (tail + 1) / (len(self.draws) + 1))


def difference(a: Cell, b: Cell, cfg: CompareConfig) -> Difference:
    """b - a: the point difference of the models' means and cfg.bootstrap hierarchical bootstrap draws (the
    module docstring says how they are drawn), seeded by cfg.seed."""
    if not all(c.replicates and all(c.replicates) for c in (a, b)):
        raise ValueError("a compared cell needs at least one replicate and a run in each")
    runs = a.runs + b.runs
    units = {r.units for r in runs}
    if len(units) != 1:
        raise UserError("the compared runs were tested on different documents or patients")
    n, split = len(units.pop()), len(a.runs)
    rng = np.random.default_rng(cfg.seed)
    blocks, block = [], max(1, _CHUNK // n)
    for start in range(0, cfg.bootstrap, block):
        size = min(block, cfg.bootstrap - start)
        index = rng.integers(0, n, (size, n))
        weights = np.hstack([a.draws(rng, size), b.draws(rng, size)])
        values = _run_values(runs, index, weights > 0)
        blocks.append(_resampled_mean(weights[:, split:], values[:, split:]) -
                      _resampled_mean(weights[:, :split], values[:, :split]))
    draws = np.concatenate(blocks)
    mean_a, mean_b = a.mean(), b.mean()
    return Difference(None if mean_a is None or mean_b is None else mean_b - mean_a, draws[~np.isnan(draws)],
                      cfg.bootstrap, {"units": n, "a": a.counts(), "b": b.counts()})


def _run_values(runs: list[RunScores], index: np.ndarray, used: np.ndarray) -> np.ndarray:
    """(draws x runs): each run's metric on each draw's units (rows of index), nan where undefined or not drawn
    (used: drawn). Runs with a totals_metric get every draw from one (draws x units histogram) @ rows product."""
    values = np.full(used.shape, np.nan)
    additive = {j: run.totals_metric for j, run in enumerate(runs) if run.totals_metric is not None}
    if additive:
        size, n = index.shape
        histogram = np.bincount((np.arange(size)[:, None] * n + index).ravel(), minlength=index.size)
        totals = histogram.reshape(size, n).astype(float) @ np.hstack([runs[j].rows for j in additive])
        widths = np.cumsum([runs[j].rows.shape[1] for j in additive])[:-1]
        for (j, metric), run_totals in zip(additive.items(), np.split(totals, widths, axis=1)):
            values[:, j] = metric(run_totals)
    for j, run in enumerate(runs):
        if j not in additive:
            for i in np.flatnonzero(used[:, j]):
                value = run.value(index[i])
                values[i, j] = np.nan if value is None else value
    return values


def _resampled_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each draw's weighted mean of its drawn runs' values (weights from Cell.draws); nan where one is undefined."""
    used = weights > 0
    means = (weights * np.where(used, values, 0.0)).sum(axis=1)
    return np.where((used & np.isnan(values)).any(axis=1), np.nan, means)


# ----------------------------------------------------------------------------- many comparisons


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values: sorted ascending, the r-th (from 1) of m is multiplied by m - r + 1,
    made non-decreasing along the order and capped at 1. Adjusted p < alpha rejects with family-wise error alpha.
    None (no p-value) stays None and does not count in m. (CompareConfig.correction none: the raw p-values, each
    interval at alpha.)"""
    ranked = _ranked(p_values)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[i] = running
    return adjusted


def holm_levels(p_values: Sequence[float | None], alpha: float) -> list[float | None]:
    """The level each test meets in Holm's step-down: alpha / (m - r + 1) for the r-th smallest p-value (ties in
    input order), for every test, also those after the first non-rejection. interval(level) of a test that Holm
    rejects (adjusted p < alpha) excludes 0; after the first non-rejection an interval may exclude 0 although the
    test is not rejected (the step-down stopped before it), so the adjusted p-value decides. None stays None."""
    ranked = _ranked(p_values)
    levels: list[float | None] = [None] * len(p_values)
    for rank, (_, i) in enumerate(ranked):
        levels[i] = alpha / (len(ranked) - rank)
    return levels


def _ranked(p_values: Sequence[float | None]) -> list[tuple[float, int]]:
    """(p, position) of the known p-values, smallest first, ties in input order."""
    return sorted((p, i) for i, p in enumerate(p_values) if p is not None)


def winner(models: list[str], beats: set[tuple[str, str]]) -> tuple[str | None, list[str]]:
    """(the model that beats every other model, else None; the models that no other model beats), from the
    (winner, loser) pairs found significant after correction, in the order of `models`. With a winner the second
    is [winner]; without, it is the models tied at the top (all of them when nothing is significant, none in a
    cycle of wins). A single model wins by default."""
    unbeaten = [m for m in models if not any((o, m) in beats for o in models if o != m)]
    best = [m for m in models if all((m, o) in beats for o in models if o != m)]
    return (best[0] if len(best) == 1 else None), unbeaten
