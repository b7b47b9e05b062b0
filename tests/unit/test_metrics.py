"""metrics.py against hand-computed cases, and against seqeval / scikit-learn where those are the reference."""

from __future__ import annotations

import numpy as np
import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from sklearn.metrics import average_precision_score, roc_auc_score

from medtrain import metrics

GOLD = [["O", "B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
PRED = [["O", "B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]


def test_entity_counts_by_hand() -> None:
    # PER found; LOC at the end missed (predicted ORG); ORG in sentence 2 found; a spurious LOC predicted.
    assert metrics.entity_counts(GOLD, PRED) == {"LOC": (0, 1, 1), "ORG": (1, 2, 1), "PER": (1, 1, 1)}


def test_entity_scores_by_hand() -> None:
    scores = metrics.entity_scores(metrics.entity_counts(GOLD, PRED))
    # micro: tp 2 of 4 predicted and 3 gold -> P 1/2, R 2/3, F1 4/7
    assert scores["micro"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    # per type F1: LOC 0, ORG 2*(1/2*1)/(3/2) = 2/3, PER 1 -> macro 5/9
    assert scores["per_type"]["ORG"]["f1"] == pytest.approx(2 / 3)
    assert scores["macro"]["f1"] == pytest.approx(5 / 9)
    assert scores["macro"]["precision"] == pytest.approx((0 + 0.5 + 1) / 3)


def test_strict_mode_needs_a_begin_tag() -> None:
    """An entity opened by I- is no entity in strict IOB2 (the default conlleval mode would count it)."""
    counts = metrics.entity_counts([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])
    assert counts == {"PER": (0, 0, 1)}


def test_entity_scores_equal_seqeval_strict() -> None:
    rng = np.random.default_rng(0)
    tags = ["O", "O", "B-A", "I-A", "B-B", "I-B", "I-A"]
    gold = [[str(t) for t in rng.choice(tags, rng.integers(1, 12))] for _ in range(40)]
    pred = [[str(t) if rng.random() < 0.7 else str(rng.choice(tags)) for t in sentence] for sentence in gold]
    ours = metrics.entity_scores(metrics.entity_counts(gold, pred))
    ref = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    for ours_key, ref_key in (("micro", "micro avg"), ("macro", "macro avg")):
        for name, ref_name in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[ours_key][name] == pytest.approx(ref[ref_key][ref_name])
    for tag, scores in ours["per_type"].items():
        assert scores["f1"] == pytest.approx(ref[tag]["f1-score"])
        assert scores["support"] == ref[tag]["support"]


def test_no_entities_anywhere_scores_zero() -> None:
    scores = metrics.entity_scores(metrics.entity_counts([["O", "O"]], [["O", "O"]]))
    assert scores["micro"]["f1"] == 0.0 and scores["macro"]["f1"] == 0.0 and scores["per_type"] == {}


def test_add_counts_and_micro_metric() -> None:
    total = metrics.add_counts({"A": (1, 2, 2)}, {"A": (0, 1, 1), "B": (1, 1, 1)})
    assert total == {"A": (1, 3, 3), "B": (1, 1, 1)}
    assert metrics.micro_counts(total) == (2, 4, 4)
    rows = np.array([[1, 2, 2], [0, 1, 1]], dtype=float)  # tp 1 of 3 predicted, 3 gold
    assert metrics.micro_metric("f1")(rows) == pytest.approx(1 / 3)


def test_classification_scores_by_hand() -> None:
    labels, scores = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8]
    out = metrics.classification_scores(labels, scores, threshold=0.5)
    assert out["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}
    assert (out["precision"], out["recall"], out["f1"]) == (0.5, 0.5, 0.5)
    assert out["auroc"] == pytest.approx(0.75)  # 3 of 4 (positive, negative) pairs ordered correctly
    assert out["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # recall steps at precision 1 and 2/3
    assert out["reasons"] == {}


def test_single_class_is_reported_not_raised() -> None:
    out = metrics.classification_scores([0, 0, 0], [0.2, 0.7, 0.4], threshold=0.5)
    assert out["auroc"] is None and out["auprc"] is None and out["recall"] is None
    assert out["precision"] == 0.0 and out["f1"] == 0.0  # one false positive: defined, and 0
    assert out["reasons"]["auroc"] == metrics.ONE_CLASS and "recall" in out["reasons"]
    quiet = metrics.classification_scores([0, 0], [0.1, 0.2], threshold=0.5)
    assert quiet["f1"] is None and quiet["precision"] is None and "f1" in quiet["reasons"]


def test_choose_threshold_by_hand() -> None:
    # sorted: .9(+) .8(+) .4(+) .35(-) .1(-): F1 at .4 is 1.0
    assert metrics.choose_threshold([0, 1, 0, 1, 1], [0.1, 0.9, 0.35, 0.4, 0.8]) == 0.4
    # F1 2/3 at both .9 and .1: the higher threshold wins
    assert metrics.choose_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.1]) == 0.9
    # tied scores are one candidate: at .5 both are in (F1 2/3)
    assert metrics.choose_threshold([1, 0], [0.5, 0.5]) == 0.5
    assert metrics.choose_threshold([0, 0], [0.3, 0.6]) == 0.5  # no positives: the default cut-off


def test_fast_ranking_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(2, 30))
        labels = rng.integers(0, 2, n)
        if labels.min() == labels.max():
            continue
        scores = rng.integers(0, 5, n) / 4  # many ties
        assert metrics.fast_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
        assert metrics.fast_auprc(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def test_classification_metric_matches_point_values() -> None:
    labels, scores = [0, 0, 1, 1, 0], [0.1, 0.6, 0.4, 0.8, 0.3]
    rows = np.column_stack([labels, scores])
    point = metrics.classification_scores(labels, scores, threshold=0.5)
    for name in ("f1", "precision", "recall", "auroc", "auprc"):
        assert metrics.classification_metric(name, 0.5)(rows) == pytest.approx(point[name])
    assert metrics.classification_metric("auroc")(rows[labels == np.array(0)]) is None


def test_bootstrap_ci_of_a_mean() -> None:
    units = np.array([0.0, 1.0] * 50)
    lo, hi = metrics.bootstrap_ci(units, np.mean, n=1000, seed=0)
    assert 0.38 < lo < 0.45 and 0.55 < hi < 0.62  # about 0.5 +- 1.96 * 0.05
    assert metrics.bootstrap_ci(units, np.mean, n=1000, seed=0) == (lo, hi)  # seeded
    lo90, hi90 = metrics.bootstrap_ci(units, np.mean, n=1000, seed=0, alpha=0.1)
    assert lo < lo90 and hi90 < hi


def test_bootstrap_ci_edge_cases() -> None:
    assert metrics.bootstrap_ci(np.ones(5), np.mean, n=100) == (1.0, 1.0)
    assert metrics.bootstrap_ci(np.array([]), np.mean) == (None, None)
    assert metrics.bootstrap_ci(np.ones(5), lambda rows: None, n=50) == (None, None)
    interval = metrics.with_interval(None, np.ones(3), np.mean, n=10, seed=0, alpha=0.05)
    assert interval == {"value": None, "lo": None, "hi": None}


def test_bootstrap_units_are_documents_or_the_sentences_of_a_single_document() -> None:
    gold = [["B-DRUG", "O"], ["O", "B-DRUG"], ["B-DRUG", "O"]]
    pred = [["B-DRUG", "O"], ["O", "O"], ["O", "O"]]
    by_doc = metrics.unit_counts(["a", "a", "b"], gold, pred)
    assert {unit: metrics.micro_counts(c) for unit, c in by_doc.items()} == {"a": (1, 1, 2), "b": (0, 0, 1)}
    by_sentence = metrics.unit_counts(["a", "a", "a"], gold, pred)
    assert [metrics.micro_counts(c) for c in by_sentence.values()] == [(1, 1, 1), (0, 0, 1), (0, 0, 1)]
    assert len(set(by_sentence)) == 3


def test_span_counts_match_type_and_every_offset_as_multisets() -> None:
    gold = [("DISO", ((0, 4),)), ("DISO", ((0, 4),)), ("CHEM", ((5, 9), (12, 15))), ("ANAT", ((0, 2),))]
    pred = [("DISO", ((0, 4),)), ("CHEM", ((5, 9),)), ("ANAT", ((0, 2),)), ("ANAT", ((20, 22),))]
    # DISO: one of the two equal gold entities found; CHEM: a fragment alone is not the discontinuous entity;
    # ANAT: one found, one spurious.
    counts = metrics.span_counts(gold, pred)
    assert counts == {"ANAT": (1, 2, 1), "CHEM": (0, 1, 1), "DISO": (1, 1, 2)}
    assert metrics.prf(*metrics.micro_counts(counts)) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert metrics.span_counts([], []) == {}
