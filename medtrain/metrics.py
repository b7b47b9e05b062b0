"""Evaluation metrics: seqeval entity scores, scikit-learn classification scores, bootstrap intervals.

Pure functions on tags, labels and scores; nothing here reads files or sees text.

- Exact-offset entity scores (`span_counts`, the official metric of NER shared tasks and medtrain's headline
  NER F1) count an entity as found only when its type and every character offset match, gold and predicted
  entities each a multiset; the same Counts shape, so the same sums, averages and bootstrap apply.
- Word-level entity scores follow seqeval in strict mode with the IOB2 scheme (an entity counts only when its type,
  start and end all match). They are computed from per-type counts (true positives, predicted, gold) so
  that counts per document can be summed inside a bootstrap without re-running seqeval; the point values
  equal `seqeval.metrics.classification_report(mode="strict", scheme=IOB2, zero_division=0)`.
- Classification scores are reported as null, with a reason, where they are undefined (a single-class
  evaluation set, no predicted positives) instead of raising or silently reporting 0.
- `bootstrap_ci` resamples whole units (documents, patients), because tokens and notes of one unit are not
  independent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from seqeval.scheme import IOB2, Entities
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

Counts = dict[str, tuple[int, int, int]]
"""Per entity type: (true positives, predicted entities, gold entities)."""

ONE_CLASS = "the evaluation set has only one class"


# ----------------------------------------------------------------------------- entities (seqeval strict IOB2)


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Counts:
    """Per-type (tp, predicted, gold) counts over sentences of IOB2 tags, as seqeval's strict mode counts."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tag sequences differ in length")
    true = Entities([list(s) for s in gold], IOB2)
    found = Entities([list(s) for s in pred], IOB2)
    counts: Counts = {}
    for tag in sorted(true.unique_tags | found.unique_tags):
        t, p = true.filter(tag), found.filter(tag)
        counts[tag] = (len(t & p), len(p), len(t))
    return counts


def span_counts(gold: Iterable[tuple[str, Hashable]], pred: Iterable[tuple[str, Hashable]]) -> Counts:
    """Per-type (tp, predicted, gold) counts over exact (type, span) matches; a span is any hashable (character
    fragments). Two equal gold entities need two equal predictions to both count."""
    gold_counts, pred_counts = Counter(gold), Counter(pred)
    found = gold_counts & pred_counts
    counts: dict[str, list[int]] = {}
    for i, counter in enumerate((found, pred_counts, gold_counts)):
        for (entity_type, _), n in counter.items():
            counts.setdefault(entity_type, [0, 0, 0])[i] += n
    return {t: (c[0], c[1], c[2]) for t, c in sorted(counts.items())}


def add_counts(*parts: Counts) -> Counts:
    """Sum per-type counts (e.g. over documents or languages)."""
    total: dict[str, tuple[int, int, int]] = {}
    for counts in parts:
        for tag, (tp, n_pred, n_gold) in counts.items():
            a, b, c = total.get(tag, (0, 0, 0))
            total[tag] = (a + tp, b + n_pred, c + n_gold)
    return dict(sorted(total.items()))


def unit_counts(doc_ids: Sequence[str], gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
                ) -> dict[str, Counts]:
    """Entity counts per bootstrap unit, from each sentence's document id: a unit is a document, or a sentence
    when the set is one document (so a bootstrap can still vary). finetune's intervals and the study's
    comparison both take their units from here, so they resample the same things."""
    single = len(set(doc_ids)) == 1
    groups: dict[str, list[int]] = {}
    for i, doc_id in enumerate(doc_ids):
        groups.setdefault(f"{doc_id}:{i}" if single else doc_id, []).append(i)
    return {unit: entity_counts([gold[i] for i in idx], [pred[i] for i in idx]) for unit, idx in groups.items()}


def micro_counts(counts: Counts) -> tuple[int, int, int]:
    """(tp, predicted, gold) over all types."""
    return tuple(int(sum(c[i] for c in counts.values())) for i in range(3))  # type: ignore[return-value]


def prf(tp: float, n_pred: float, n_gold: float) -> dict[str, float]:
    """Precision, recall and F1 from counts; 0 where undefined, as seqeval's zero_division=0."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(counts: Counts) -> dict[str, Any]:
    """Micro and macro averages and per-type scores (types in gold or predictions, as seqeval lists them)."""
    per_type = {tag: {**prf(*c), "support": c[2]} for tag, c in counts.items()}
    tp, n_pred, n_gold = micro_counts(counts)
    macro = {k: float(np.mean([s[k] for s in per_type.values()])) if per_type else 0.0
             for k in ("precision", "recall", "f1")}
    return {"micro": {**prf(tp, n_pred, n_gold), "support": n_gold},
            "macro": {**macro, "support": n_gold}, "per_type": per_type}


def micro_metric(name: str) -> Callable[[np.ndarray], float]:
    """A bootstrap metric over rows of (tp, predicted, gold) counts, one row per unit."""

    def metric(rows: np.ndarray) -> float:
        return prf(*rows.sum(axis=0))[name]

    return metric


# ----------------------------------------------------------------------------- binary classification


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def classification_scores(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, Any]:
    """F1, precision, recall and the confusion matrix at `threshold` (score >= threshold is positive), plus
    threshold-free AUROC and AUPRC. Undefined values are None and `reasons` says why."""
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    predicted = (s >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, predicted, labels=[0, 1]).ravel())
    out: dict[str, Any] = {
        "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auroc": None, "auprc": None, "threshold": float(threshold),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp}, "reasons": {},
    }
    reasons = out["reasons"]
    if out["precision"] is None:
        reasons["precision"] = "no predicted positives"
    if out["recall"] is None:
        reasons["recall"] = "no positive labels"
    if out["f1"] is None:
        reasons["f1"] = "no positive labels and no predicted positives"
    if len(set(y.tolist())) < 2:
        reasons["auroc"] = reasons["auprc"] = ONE_CLASS
    else:
        out["auroc"], out["auprc"] = float(roc_auc_score(y, s)), float(average_precision_score(y, s))
    return out


def fast_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic (ties count half): equal to roc_auc_score, without its per-call
    validation, which dominates a 1000-resample bootstrap. Needs both classes."""
    ranks = rankdata(scores)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def fast_auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision as average_precision_score computes it (a step function over distinct thresholds)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # the last row of each group of tied scores
    tp = np.cumsum(y)[last]
    precision, recall = tp / (last + 1), tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def classification_metric(name: str, threshold: float = 0.5) -> Callable[[np.ndarray], float | None]:
    """A bootstrap metric over rows of (label, score), one row per unit (patient)."""

    def metric(rows: np.ndarray) -> float | None:
        labels = rows[:, 0].astype(int)
        if name in ("auroc", "auprc"):
            if labels.min() == labels.max():
                return None
            return (fast_auroc if name == "auroc" else fast_auprc)(labels, rows[:, 1])
        predicted = rows[:, 1] >= threshold
        tp = int(np.sum(predicted & (labels == 1)))
        fp, fn = int(np.sum(predicted)) - tp, int(np.sum(labels)) - tp
        den = {"precision": tp + fp, "recall": tp + fn, "f1": 2 * tp + fp + fn}[name]
        return (2 * tp if name == "f1" else tp) / den if den else None

    return metric


def choose_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The score threshold (score >= t is positive) with the highest F1; ties go to the highest threshold.

    Candidates are the observed scores. Without any positive label F1 is 0 everywhere and 0.5 is returned
    (the usual cut-off for a probability).
    """
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    positives = int(y.sum())
    if positives == 0:
        return 0.5
    order = np.argsort(-s, kind="stable")
    s_sorted, tp = s[order], np.cumsum(y[order])
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # the last row of each tie group: all its scores are in
    candidates = np.flatnonzero(last)
    predicted = candidates + 1
    f1 = 2 * tp[candidates] / (predicted + positives)
    return float(s_sorted[candidates[int(np.argmax(f1))]])


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_ci(units: Sequence[Any] | np.ndarray, metric_fn: Callable[[np.ndarray], float | None],
                 n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Percentile interval of `metric_fn` over `n` resamples (with replacement) of whole units.

    `units` is one row per unit (e.g. per-document counts); `metric_fn` gets the resampled rows as an array.
    Resamples where the metric is undefined (None) are skipped; (None, None) if fewer than half are defined.
    """
    rows = np.asarray(units)
    if len(rows) == 0 or n < 1:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        value = metric_fn(rows[rng.integers(0, len(rows), len(rows))])
        if value is not None:
            values.append(value)
    if len(values) < n / 2:
        return None, None
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def with_interval(value: float | None, units: Sequence[Any] | np.ndarray,
                  metric_fn: Callable[[np.ndarray], float | None], n: int, seed: int,
                  alpha: float) -> dict[str, float | None]:
    """{"value", "lo", "hi"}: a point estimate and its bootstrap interval."""
    lo, hi = bootstrap_ci(units, metric_fn, n=n, seed=seed, alpha=alpha) if value is not None else (None, None)
    return {"value": value, "lo": lo, "hi": hi}
