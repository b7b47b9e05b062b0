"""Strict exact-offset entity scores: an entity counts when its type and every fragment's offsets match.

The one scorer of fine-tuning, the study and `medtrain evaluate`: offsets only mean something within a document,
so gold and predictions are compared document by document and the counts summed (micro).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from medtrain.data.ner.entities import Entity, flat_spans


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
