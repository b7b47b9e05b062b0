"""Comparisons of models with pretraining replicates: the hierarchical bootstrap, p-values, Holm and the winner."""

from __future__ import annotations

import numpy as np
import pytest

from medtrain import metrics
from medtrain.errors import UserError
from medtrain.study.compare import Cell, Difference, RunScores, difference, holm, holm_levels, micro_f1_of_totals, \
    winner
from medtrain.study.config import CompareConfig


def ner(rows: np.ndarray, vectorised: bool = True) -> RunScores:
    """A NER run: per-document (tp, predicted, gold) counts, scored by micro F1 as ner_scores scores them."""
    units = tuple(f"doc{i}" for i in range(len(rows)))
    return RunScores(units, np.asarray(rows, dtype=float), metrics.micro_metric("f1"),
                     micro_f1_of_totals if vectorised else None)


def noisy_run(rng: np.random.Generator, hit_rate: float, units: int = 80) -> RunScores:
    """A run finding each of a document's gold entities with probability hit_rate, plus a few false positives."""
    gold = rng.integers(1, 8, units)
    tp = rng.binomial(gold, hit_rate)
    return ner(np.stack([tp, tp + rng.integers(0, 2, units), gold], axis=1))


def constant(value: float | None, units: int = 10) -> RunScores:
    """A run whose metric is `value` on any draw (None: undefined)."""
    return RunScores(tuple(f"u{i}" for i in range(units)), np.zeros((units, 1)), lambda rows: value)


def old_multi_bootstrap(base: list[RunScores], variant: list[RunScores], bootstrap: int, seed: int) -> np.ndarray:
    """The plain multi-bootstrap, draw by draw, as compare.py drew it before pretraining replicates."""
    rng = np.random.default_rng(seed)
    n = len(base[0].units)
    out = []
    for _ in range(bootstrap):
        index = rng.integers(0, n, n)
        means = [np.mean([runs[i].value(index) for i in rng.integers(0, len(runs), len(runs))])
                 for runs in (base, variant)]
        out.append(means[1] - means[0])
    return np.array(out)


def test_one_replicate_reduces_to_the_plain_multi_bootstrap() -> None:
    rng = np.random.default_rng(0)
    base = [noisy_run(rng, 0.5) for _ in range(3)]
    variant = [noisy_run(rng, 0.6) for _ in range(3)]
    d = difference(Cell([base]), Cell([variant]), CompareConfig(bootstrap=2000, seed=1))
    old = old_multi_bootstrap(base, variant, 2000, seed=2)
    sd = old.std()
    assert len(d.draws) == 2000 and d.draws.std() == pytest.approx(sd, rel=0.1)
    assert abs(d.draws.mean() - old.mean()) < 0.15 * sd
    for q in (0.025, 0.5, 0.975):
        assert abs(np.quantile(d.draws, q) - np.quantile(old, q)) < 0.35 * sd
    assert d.delta == pytest.approx(np.mean([r.value() for r in variant]) - np.mean([r.value() for r in base]))
    assert d.counts == {"units": 80, "a": {"replicates": 1, "seeds": [3]}, "b": {"replicates": 1, "seeds": [3]}}


def test_a_cell_means_replicates_then_their_seeds() -> None:
    cell = Cell([[constant(0.2)], [constant(0.4), constant(0.6), constant(None)], [constant(None)]])
    assert cell.mean() == pytest.approx((0.2 + 0.5) / 2)  # not the pooled 0.4; an all-None replicate is skipped
    assert cell.values() == [0.2, 0.4, 0.6, None, None]
    assert cell.std() == pytest.approx(np.std([0.2, 0.4, 0.6], ddof=1))
    assert cell.counts() == {"replicates": 3, "seeds": [1, 3, 1]}
    assert Cell([[constant(None)]]).mean() is None and Cell([[constant(0.3)]]).std() is None


def test_draws_weight_replicates_equally_whatever_their_seed_counts() -> None:
    """Replicate 0 has 1 seed, replicate 1 has 3: each drawn replicate carries 1/R of the mean, split over its
    drawn seeds, so over many draws each replicate's share is 1/2 although it has 1/4 or 3/4 of the runs."""
    cell = Cell([[constant(0.0)], [constant(0.0), constant(0.0), constant(0.0)]])
    weights = cell.draws(np.random.default_rng(0), 4000)
    assert weights.shape == (4000, 4) and np.allclose(weights.sum(axis=1), 1)
    assert weights[:, 0].mean() == pytest.approx(0.5, abs=0.02)
    assert set(np.round(weights[:, 0], 9)) == {0.0, 0.5, 1.0}  # replicate 0 drawn 0, 1 or 2 times out of 2


def test_disagreeing_replicates_widen_the_interval() -> None:
    """The same six runs: pooled as seeds of one pretraining they look like six independent tries; as two
    replicates that each ran three times alike, there are only two pretrainings to learn from."""
    rng = np.random.default_rng(3)
    base = Cell([[noisy_run(rng, 0.5) for _ in range(3)]])
    good, bad = noisy_run(rng, 0.9), noisy_run(rng, 0.3)
    cfg = CompareConfig(bootstrap=2000)
    pooled = difference(base, Cell([[good] * 3 + [bad] * 3]), cfg).interval(0.05)
    replicates = difference(base, Cell([[good] * 3, [bad] * 3]), cfg).interval(0.05)
    assert pooled is not None and replicates is not None
    assert replicates[1] - replicates[0] > 1.25 * (pooled[1] - pooled[0])  # about 1.4; 1 without the hierarchy


def test_vectorised_ner_equals_the_metric_draw_by_draw() -> None:
    rng = np.random.default_rng(4)
    rows = [[noisy_run(rng, p).rows for _ in range(2)] for p in (0.5, 0.6)]
    rows[0][0][:5] = 0  # documents without entities: F1 of empty totals are 0 in both ways
    cells = {v: [Cell([[ner(r, v) for r in reps]]) for reps in rows] for v in (True, False)}
    cfg = CompareConfig(bootstrap=500, seed=7)
    fast, slow = difference(*cells[True], cfg), difference(*cells[False], cfg)
    assert np.allclose(fast.draws, slow.draws, rtol=0, atol=1e-12) and len(fast.draws) == 500


def test_micro_f1_of_totals_is_prf_f1() -> None:
    totals = np.array([[0, 0, 0], [0, 3, 0], [0, 0, 4], [0, 2, 5], [3, 4, 5], [7, 7, 7], [1, 9, 2]], dtype=float)
    assert micro_f1_of_totals(totals).tolist() == [metrics.prf(*t)["f1"] for t in totals]


def test_draws_with_an_undefined_metric_are_dropped_and_too_few_give_no_interval() -> None:
    """Defined only when documents 0 and 1 are both drawn: about 40% of draws, fewer than half."""
    def both_first(rows: np.ndarray) -> float | None:
        return float(rows[:, 0].mean()) if {0, 1} <= set(rows[:, 0].tolist()) else None

    run = RunScores(tuple(f"d{i}" for i in range(10)), np.arange(10, dtype=float)[:, None], both_first)
    d = difference(Cell([[run]]), Cell([[run]]), CompareConfig(bootstrap=400))
    assert 0 < len(d.draws) < 200 and not d.defined
    assert d.interval(0.05) is None and d.p_value is None
    assert d.delta == 0


def test_p_value_counts_each_side_with_the_plus_one() -> None:
    def diff(draws: list[float]) -> Difference:
        return Difference(0.0, np.array(draws), len(draws), {})

    assert diff([-1.0] * 3 + [1.0] * 97).p_value == pytest.approx(2 * 4 / 101)
    assert diff([1.0] * 100).p_value == pytest.approx(2 / 101)  # never 0
    assert diff([0.0] * 10 + [1.0] * 90).p_value == pytest.approx(2 * 11 / 101)  # 0 counts on both sides
    assert diff([0.0] * 10).p_value == 1.0  # capped
    assert diff([1.0, -1.0] * 50).interval(0.1) == (-1.0, 1.0)


@pytest.mark.parametrize("alpha", [0.05, 0.0125, 0.1])
def test_a_p_value_below_alpha_means_the_interval_excludes_zero(alpha: float) -> None:
    """Every number of draws below 0: whenever p < alpha, the percentile interval at alpha excludes 0."""
    rejected = 0
    for below in range(40):
        draws = np.concatenate([-np.arange(1, below + 1), np.arange(1, 400 - below + 1)]).astype(float)
        d = Difference(1.0, draws, 400, {})
        lo, hi = d.interval(alpha)  # type: ignore[misc]
        if d.p_value < alpha:  # type: ignore[operator]
            rejected += 1
            assert lo > 0
    assert rejected > 0


def test_holm_adjusts_by_hand() -> None:
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> 0.06 (non-decreasing)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # None is not counted: m = 2; 0.5 x 2 = 1.0 (capped), 0.7 -> 1.0
    assert holm([0.2, None, 0.6]) == [pytest.approx(0.4), None, pytest.approx(0.6)]
    assert holm([0.5, 0.7, None]) == [1.0, 1.0, None]
    assert holm([]) == [] and holm([None]) == [None]


def test_holm_levels_by_hand_and_the_step_down_they_describe() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm_levels(p, 0.05) == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    assert holm_levels([0.2, None, 0.2], 0.05) == [pytest.approx(0.025), None, pytest.approx(0.05)]  # input order
    # step down: 0.005 <= 0.0125 and 0.01 <= 0.0167 are rejected; 0.03 > 0.025 stops it, and 0.04, though below
    # its own level 0.05, is not rejected: the adjusted p-values say so.
    rejected = [a < 0.05 for a in holm(p)]  # type: ignore[operator]
    assert rejected == [True, False, False, True]


def test_holm_rejections_agree_with_adjusted_intervals() -> None:
    rng = np.random.default_rng(5)
    base = Cell([[noisy_run(rng, 0.5, units=60) for _ in range(2)] for _ in range(2)])
    others = [Cell([[noisy_run(rng, p, units=60) for _ in range(2)] for _ in range(2)]) for p in (0.52, 0.7, 0.9)]
    units = base.runs[0].units
    assert all(r.units == units for c in others for r in c.runs)
    diffs = [difference(base, other, CompareConfig(bootstrap=1000)) for other in others]
    adjusted, levels = holm([d.p_value for d in diffs]), holm_levels([d.p_value for d in diffs], 0.05)
    assert sum(a < 0.05 for a in adjusted) >= 2  # type: ignore[operator]
    for d, a, level in zip(diffs, adjusted, levels):
        if a < 0.05:  # type: ignore[operator]
            lo, hi = d.interval(level)  # type: ignore[misc,arg-type]
            assert lo > 0 or hi < 0


@pytest.mark.parametrize("beats, expected", [
    ({("a", "b"), ("a", "c")}, ("a", ["a"])),
    ({("a", "b"), ("c", "b")}, (None, ["a", "c"])),
    (set(), (None, ["a", "b", "c"])),
    ({("b", "a")}, (None, ["b", "c"])),
    ({("a", "b"), ("b", "c"), ("c", "a")}, (None, [])),
])
def test_winner_beats_everyone_else_the_unbeaten_tie(beats: set[tuple[str, str]],
                                                     expected: tuple[str | None, list[str]]) -> None:
    assert winner(["a", "b", "c"], beats) == expected


def test_a_single_model_wins_by_default() -> None:
    assert winner(["a"], set()) == ("a", ["a"])


def test_different_test_units_are_refused() -> None:
    a = Cell([[RunScores(("x",), np.ones((1, 3)), metrics.micro_metric("f1"))]])
    b = Cell([[RunScores(("y",), np.ones((1, 3)), metrics.micro_metric("f1"))]])
    with pytest.raises(UserError, match="different documents or patients"):
        difference(a, b, CompareConfig(bootstrap=10))


def test_compare_config_takes_a_correction() -> None:
    assert CompareConfig().correction == "holm" and CompareConfig(correction="none").correction == "none"
