"""Strict exact-offset entity scores: an entity counts when its type and every fragment's offsets match.

The one scorer of fine-tuning, the study and `medtrain evaluate`: offsets only mean something within a document,
so gold and predictions are compared document by document and the counts summed (micro).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medtrain import metrics
from medtrain.data.ner.entities import Entity, NerDocument, flat_spans

PRF = ("f1", "precision", "recall")


def exact_span_scores(gold: Iterable[Entity], pred: Iterable[Entity]) -> dict[str, Any]:
    """Micro and per-type precision/recall/F1 over exact (type, fragments) matches in ONE document.

    Gold keeps every nested and discontinuous entity, which a flat IOB2 tagger cannot all predict: a perfect
    tagger's recall is `recall_ceiling` (the gold entities that survive `flat_spans` whole), so read recall
    against it. For several documents use `corpus_span_scores` (offsets only mean something within a document).
    """
    return corpus_span_scores([gold], [pred])


def corpus_span_scores(gold_by_doc: Iterable[Iterable[Entity]],
                       pred_by_doc: Iterable[Iterable[Entity]]) -> dict[str, Any]:
    """`exact_span_scores` summed over documents: gold and predicted entity lists aligned by document."""
    correct, support, predicted, reachable = Counter(), Counter(), Counter(), Counter()
    for gold_entities, pred_entities in zip(gold_by_doc, pred_by_doc, strict=True):
        gold = Counter((e.type, e.fragments) for e in gold_entities)
        pred = Counter((e.type, e.fragments) for e in pred_entities)
        flat = Counter((t, ((s, e),)) for s, e, t in flat_spans(Entity(t, f) for t, f in gold.elements()))
        for counts, keys in ((correct, gold & pred), (support, gold), (predicted, pred), (reachable, gold & flat)):
            counts.update(t for t, _ in keys.elements())
    totals = [sum(c.values()) for c in (correct, support, predicted, reachable)]
    per_type = {t: _scores(correct[t], support[t], predicted[t], reachable[t]) for t in sorted(support | predicted)}
    return {**_scores(*totals), "per_type": per_type}


def _scores(correct: int, support: int, predicted: int, reachable: int) -> dict[str, float | int]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted,
            "correct": correct, "recall_ceiling": reachable / support if support else 0.0}


def span_unit_counts(docs: Sequence[NerDocument], predicted: Mapping[str, Iterable[Entity]],
                     types: set[str]) -> dict[str, metrics.Counts]:
    """Exact-offset counts of `types` per bootstrap unit: a document, or each sentence when the set is one
    document (an entity belongs to the sentence its first character is in, `doc:i` as metrics.unit_counts names
    it). Fine-tuning's intervals and the study's comparison both count here, so they resample the same things."""
    def keys(entities: Iterable[Entity]) -> list[tuple[str, Any]]:
        return [(e.type, e.fragments) for e in entities if e.type in types]

    if len(docs) != 1:
        return {d.doc_id: metrics.span_counts(keys(d.entities), keys(predicted.get(d.doc_id, ()))) for d in docs}
    doc = docs[0]
    starts, start = [], 0
    for sentence in doc.sentences:
        start = sentence.words[0].start if sentence.words else start
        starts.append(start)
    gold: list[list[Entity]] = [[] for _ in starts]
    pred: list[list[Entity]] = [[] for _ in starts]
    for out, entities in ((gold, doc.entities), (pred, predicted.get(doc.doc_id, ()))):
        for entity in entities:
            out[max(0, bisect_right(starts, entity.start) - 1)].append(entity)
    return {f"{doc.doc_id}:{i}": metrics.span_counts(keys(g), keys(p)) for i, (g, p) in enumerate(zip(gold, pred))}


def span_report(docs: Sequence[NerDocument], predicted: Mapping[str, Iterable[Entity]], types: set[str],
                bootstrap: int, seed: int, alpha: float) -> dict[str, Any]:
    """The headline of a test set: micro P/R/F1 of `types` with bootstrap intervals over `span_unit_counts`'
    units, per-type scores and the recall ceiling of a flat tagger, as results.json and `medtrain evaluate`
    report them."""
    units = span_unit_counts(docs, predicted, types)
    scores = metrics.entity_scores(metrics.add_counts(*units.values()))
    rows = np.array([metrics.micro_counts(c) for c in units.values()], dtype=float).reshape(-1, 3)
    report: dict[str, Any] = {name: metrics.with_interval(scores["micro"][name], rows, metrics.micro_metric(name),
                                                          bootstrap, seed, alpha) for name in PRF}
    report.update(scores)
    ceiling = corpus_span_scores([[e for e in d.entities if e.type in types] for d in docs],
                                 [predicted.get(d.doc_id, ()) for d in docs])["recall_ceiling"]
    report.update(metric="exact-offset entity F1 (strict, micro)", recall_ceiling=ceiling,
                  bootstrap_unit="document" if len(docs) > 1 else "sentence", scored_types=sorted(types))
    return report
