"""Sampling modes of the corpus mix (data/mixing.py) and what a PackedStream realises of them."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medtrain.data.mixing import mixture_probabilities
from medtrain.data.shards import CorpusInfo, Manifest, write_manifest, write_shard
from medtrain.data.stream import PackedStream
from medtrain.errors import UserError

SIZES = [300, 100, 50, 25, 40]
LANGUAGES = ["en", "en", "ro", "ro", "nl"]
WEIGHTS = [1.0, 2.0, 1.0, 0.5, 0.0]


def _by_hand_temperature(temperature: float) -> list[float]:
    """The definition, spelled out: language L gets S_L ** (1/T), shared within L by weight x size."""
    scaled = [w * n for w, n in zip(WEIGHTS, SIZES)]
    totals = {lang: sum(s for s, l2 in zip(scaled, LANGUAGES) if l2 == lang) for lang in set(LANGUAGES)}
    language_mass = {lang: total ** (1 / temperature) for lang, total in totals.items()}
    norm = sum(language_mass.values())
    return [language_mass[lang] / norm * s / totals[lang] if s else 0.0 for s, lang in zip(scaled, LANGUAGES)]


def test_uniform_follows_the_weights_only() -> None:
    p = mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "uniform")
    assert p == pytest.approx([1 / 4.5, 2 / 4.5, 1 / 4.5, 0.5 / 4.5, 0.0])
    # equal weights: equal shares, whatever the sizes
    assert mixture_probabilities([1000, 10], ["en", "en"], [1.0, 1.0]) == pytest.approx([0.5, 0.5])


def test_proportional_is_weight_times_size() -> None:
    p = mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "proportional")
    total = 300 + 200 + 50 + 12.5  # weight x size: 300, 200, 50, 12.5, 0
    assert p == pytest.approx([300 / total, 200 / total, 50 / total, 12.5 / total, 0.0])


@pytest.mark.parametrize("temperature", [0.5, 2.0, 5.0])
def test_temperature_matches_the_definition(temperature: float) -> None:
    p = mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "temperature", temperature)
    assert p == pytest.approx(_by_hand_temperature(temperature))
    assert p.sum() == pytest.approx(1.0)


def test_temperature_one_is_proportional_and_large_is_uniform_over_languages() -> None:
    one = mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "temperature", 1.0)
    assert one == pytest.approx(mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "proportional"))
    hot = mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "temperature", 1e6)
    # "nl" has weight 0, so it takes no part: en and ro get half each, split within by weight x size
    assert hot[0] + hot[1] == pytest.approx(0.5, abs=1e-4) and hot[2] + hot[3] == pytest.approx(0.5, abs=1e-4)
    assert hot[0] / hot[1] == pytest.approx(300 / 200)
    # T < 1 sharpens towards the largest language, T > 1 flattens
    en = [sum(mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "temperature", t)[:2]) for t in (0.5, 1.0, 2.0)]
    assert en[0] > en[1] > en[2]


@pytest.mark.parametrize("sampling", ["uniform", "proportional", "temperature"])
def test_zero_weight_is_exactly_zero(sampling: str) -> None:
    p = mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, sampling, 3.0)
    assert p[4] == 0.0 and p.sum() == pytest.approx(1.0)
    # a language whose only corpus has weight 0 gets nothing even at a tiny temperature
    cold = mixture_probabilities([10, 10**6], ["a", "b"], [1.0, 0.0], sampling, 0.01)
    assert cold.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan])
def test_temperature_must_be_positive(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "temperature", temperature)


def test_unknown_sampling_is_refused() -> None:
    with pytest.raises(ValueError, match="sampling must be one of"):
        mixture_probabilities(SIZES, LANGUAGES, WEIGHTS, "natural")  # type: ignore[arg-type]


# ---- PackedStream over tiny shards: each sequence carries its corpus id in token 1 ----

SEQ_LEN = 4
CORPORA = {"big": (5000, "en"), "mid": (2000, "en"), "small": (1000, "ro")}  # 8000: two interleaving chunks


def _shards(root: Path) -> Path:
    shards, corpora = [], []
    for i, (name, (size, language)) in enumerate(CORPORA.items()):
        tokens = np.full((size, SEQ_LEN), 3, dtype=np.uint16)
        tokens[:, 0], tokens[:, 1], tokens[:, 2] = 2, 10 + i, 100 + np.arange(size) % 500
        shards.append(write_shard(root, f"train/{name}/shard-00000.bin", name, "train", tokens))
        corpora.append(CorpusInfo(name=name, language=language, domain="clinical", weight=1.0, documents=size,
                                  tokens=size * SEQ_LEN, sequences=size, validation_sequences=0))
    write_manifest(root, Manifest(format_version=1, seq_len=SEQ_LEN, dtype="<u2", vocab_size=1000,
                                  tokenizer="synthetic", tokenizer_fingerprint="0" * 16,
                                  special_ids={"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
                                  corpora=corpora, shards=shards))
    return root


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shards(tmp_path_factory.mktemp("mix-shards"))


def _stream(shard_dir: Path, **kwargs) -> PackedStream:
    return PackedStream(shard_dir, **{"micro_batch": 64, "block_size": 256, **kwargs})


def test_realised_shares_approach_the_target(shard_dir: Path) -> None:
    stream = _stream(shard_dir, sampling="temperature", temperature=2.0)
    sizes = [size for size, _ in CORPORA.values()]
    target = mixture_probabilities(sizes, [lang for _, lang in CORPORA.values()], [1.0] * 3, "temperature", 2.0)
    assert stream.target == pytest.approx(target)
    batches = 500  # 32000 sequences: four stream epochs
    seen = Counter(int(row[1]) - 10 for k in range(batches) for row in stream.tokens(k))
    total = batches * 64
    for c, name in enumerate(CORPORA):
        assert abs(seen[c] / total - target[c]) < 1e-3
        share = stream.consumed_share(total)[name]
        assert share["sequences"] == seen[c] and share["tokens"] == seen[c] * SEQ_LEN
        assert share["share"] == seen[c] / total and share["target"] == pytest.approx(target[c])


def test_proportional_with_equal_weights_is_one_pass_per_epoch(shard_dir: Path) -> None:
    stream = _stream(shard_dir, sampling="proportional")
    assert stream.mix.tolist() == [size for size, _ in CORPORA.values()]
    shares = stream.consumed_share(3 * 8000)
    assert [s["sequences"] for s in shares.values()] == [3 * size for size, _ in CORPORA.values()]


def test_consumed_share_is_what_two_ranks_yielded(shard_dir: Path) -> None:
    world_size, micro_batch = 2, 48
    ranks = [iter(_stream(shard_dir, rank=r, world_size=world_size, micro_batch=micro_batch,
                          sampling="temperature", temperature=3.0)) for r in range(world_size)]
    reference = _stream(shard_dir, world_size=world_size, micro_batch=micro_batch, sampling="temperature",
                        temperature=3.0)
    seen: Counter[int] = Counter()
    checked = 0
    # across the chunk boundary (4096), the epoch boundary (8000) and into the second epoch's first chunk
    for k in range(1, 121):
        for it in ranks:
            seen.update(int(row[1]) - 10 for row in next(it))
        if k in (1, 30, 50, 83, 84, 120):
            shares = reference.consumed_share(k * world_size * micro_batch)
            assert {c: shares[name]["sequences"] for c, name in enumerate(CORPORA)} == dict(seen)
            assert sum(s["share"] for s in shares.values()) == pytest.approx(1.0)
            checked += 1
    assert checked == 6
    assert all(s["sequences"] == 0 and s["share"] == 0.0 for s in reference.consumed_share(0).values())


@pytest.mark.parametrize("saved, now, named", [
    ({"sampling": "proportional"}, {"sampling": "temperature", "temperature": 2.0}, "sampling"),
    ({"sampling": "temperature", "temperature": 2.0}, {"sampling": "temperature", "temperature": 3.0},
     "temperature"),
    ({}, {"sampling": "proportional"}, "sampling"),
])
def test_resuming_with_another_sampling_is_refused(shard_dir: Path, saved: dict, now: dict, named: str) -> None:
    state = _stream(shard_dir, **saved).state_dict()
    with pytest.raises(UserError, match=named):
        _stream(shard_dir, **now).load_state_dict(state)
    _stream(shard_dir, **saved).load_state_dict(state)  # the same set-up resumes


def test_a_state_saved_before_sampling_modes_resumes_as_uniform(shard_dir: Path) -> None:
    state = _stream(shard_dir).state_dict()
    old = {k: v for k, v in state.items() if k not in ("sampling", "temperature")}
    _stream(shard_dir).load_state_dict(old)
    with pytest.raises(UserError, match="sampling"):
        _stream(shard_dir, sampling="proportional").load_state_dict(old)


def test_bad_temperature_is_a_user_error(shard_dir: Path) -> None:
    with pytest.raises(UserError, match="temperature must be > 0"):
        _stream(shard_dir, sampling="temperature", temperature=0.0)
