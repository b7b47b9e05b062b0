"""PackedStream and ValidationStream: order, partition, mixing, exact resume (with real DataLoader workers)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from medtrain.data.masking import MaskedBatch, Masker
from medtrain.data.shards import CorpusInfo, Manifest, write_manifest, write_shard
from medtrain.data.stream import (PackedStream, StatefulLoader, ValidationStream, _Mix, apportion,
                                  validation_loader)
from medtrain.errors import UserError

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
# train shards per corpus (unequal sizes, corpus "a" split over two shards); validation sizes
TRAIN = {"a": [200, 101], "b": [170], "c": [53]}
VALID = {"a": 23, "b": 11, "c": 5}
N_TRAIN = sum(sum(v) for v in TRAIN.values())  # 524


def _sequences(corpus: int, first: int, count: int, seq_len: int) -> np.ndarray:
    """Sequences that encode (corpus, index): [CLS] 10+corpus 100+index//500 100+index%500 [SEP] ..."""
    index = np.arange(first, first + count)
    out = np.full((count, seq_len), SPECIAL["sep"], dtype=np.uint16)
    out[:, 0] = SPECIAL["cls"]
    out[:, 1] = 10 + corpus
    out[:, 2] = 100 + index // 500
    out[:, 3] = 100 + index % 500
    return out


def _key(row: np.ndarray | torch.Tensor) -> tuple[int, int]:
    row = np.asarray(row)
    return int(row[1]) - 10, (int(row[2]) - 100) * 500 + int(row[3]) - 100


def make_shards(root: Path, seq_len: int = 8, train: dict[str, list[int]] = TRAIN, tag: int = 0) -> Path:
    """A shard dir with the corpora above; `tag` changes one token so the data (and fingerprint) differ."""
    shards, corpora = [], []
    for i, (name, sizes) in enumerate(train.items()):
        first = 0
        for n, size in enumerate(sizes):
            tokens = _sequences(i, first, size, seq_len)
            tokens[:, -1] += tag
            shards.append(write_shard(root, f"train/{name}/shard-{n:05d}.bin", name, "train", tokens))
            first += size
        shards.append(write_shard(root, f"validation/{name}/shard-00000.bin", name, "validation",
                                  _sequences(i, 0, VALID[name], seq_len)))
        corpora.append(CorpusInfo(name=name, language="xx", domain="clinical", weight=1.0, documents=first,
                                  tokens=first * seq_len, sequences=first, validation_sequences=VALID[name]))
    write_manifest(root, Manifest(format_version=1, seq_len=seq_len, dtype="<u2", vocab_size=1000,
                                  tokenizer="synthetic", tokenizer_fingerprint="0" * 16, special_ids=SPECIAL,
                                  corpora=corpora, shards=shards))
    return root


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


SIZE_WEIGHTS = {name: float(sum(sizes)) for name, sizes in TRAIN.items()}


def _stream(shard_dir: Path, **kwargs) -> PackedStream:
    kwargs = {"micro_batch": 7, "block_size": 16, **kwargs}
    return PackedStream(shard_dir, **kwargs)


def _global_order(shard_dir: Path, world_size: int, batches: int, **kwargs) -> list[tuple[int, int]]:
    """The global stream reassembled from every rank's batches: global batch g = k * world_size + rank."""
    ranks = [_stream(shard_dir, rank=r, world_size=world_size, **kwargs) for r in range(world_size)]
    return [_key(row) for k in range(batches) for s in ranks for row in s.tokens(k)]


@pytest.mark.parametrize("weights, size", [(SIZE_WEIGHTS, N_TRAIN), ({"b": 0.0, "c": 0.0}, 301)])
def test_each_epoch_visits_every_sequence_once_across_ranks(shard_dir: Path, weights, size) -> None:
    # 7 * 3 does not divide the epoch: no sequence is dropped or repeated, the boundary falls inside a batch
    world_size, micro_batch = 3, 7
    batches = -(-2 * size // (world_size * micro_batch))
    order = _global_order(shard_dir, world_size, batches, weights=weights)
    first, second = order[:size], order[size:2 * size]
    assert len(set(first)) == size and len(set(second)) == size and set(first) == set(second)
    assert first != second  # the order changes per epoch
    expected = {(c, i) for c, name in enumerate(TRAIN) if weights.get(name, 1.0) > 0
                for i in range(sum(TRAIN[name]))}
    assert set(first) == expected
    # disjoint across ranks within the epoch
    per_rank = [set() for _ in range(world_size)]
    for position, key in enumerate(first):
        per_rank[(position // micro_batch) % world_size].add(key)
    assert sum(len(s) for s in per_rank) == size
    stream = _stream(shard_dir, weights=weights, micro_batch=micro_batch, world_size=world_size)
    stream.position = size // (world_size * micro_batch)  # the batch holding the epoch boundary
    assert stream.epoch == 0 and stream.state_dict()["epoch"] == 0
    stream.position += 1
    assert stream.epoch == 1


def test_same_seed_same_order_other_seed_other_order(shard_dir: Path) -> None:
    assert _global_order(shard_dir, 2, 10, seed=3) == _global_order(shard_dir, 2, 10, seed=3)
    assert _global_order(shard_dir, 2, 10, seed=3) != _global_order(shard_dir, 2, 10, seed=4)


def test_mixing_follows_weights(shard_dir: Path) -> None:
    weights = {"a": 1.0, "b": 1.0, "c": 2.0}
    stream = _stream(shard_dir, weights=weights, micro_batch=32)
    assert stream.mix.tolist() == [131, 131, 262]  # exact per stream epoch: 524 split 1:1:2
    counts = Counter(_key(row)[0] for k in range(150) for row in stream.tokens(k))
    total = sum(counts.values())
    for c, share in enumerate([0.25, 0.25, 0.5]):
        assert abs(counts[c] / total - share) < 0.02
    # corpus "c" (53 sequences) is drawn 262 times per epoch: it wraps through its own epochs evenly
    drawn = Counter(key for k in range(-(-524 // 32)) for key in map(_key, stream.tokens(k)) if key[0] == 2)
    assert set(drawn) == {(2, i) for i in range(53)} and max(drawn.values()) - min(drawn.values()) <= 1


def test_interleaving_is_exact_and_random_access() -> None:
    counts = np.array([1000, 37, 0, 500])
    mix = _Mix(seed=5, counts=counts, chunk=64)
    corpus, draw = mix.draws(np.arange(2 * counts.sum()))
    for epoch in range(2):
        part = slice(epoch * counts.sum(), (epoch + 1) * counts.sum())
        for c, n in enumerate(counts):
            assert sorted(draw[part][corpus[part] == c]) == list(range(epoch * n, (epoch + 1) * n))
    # any position alone gives the same answer as the whole run
    positions = np.array([1536, 7, 1600, 3000])
    assert (_Mix(seed=5, counts=counts, chunk=64).draws(positions)[1] == draw[positions]).all()


def test_apportion_is_exact_for_size_weights() -> None:
    assert apportion(524, np.array([301.0, 170.0, 53.0])).tolist() == [301, 170, 53]
    assert apportion(10, np.array([1.0, 1.0, 1.0])).tolist() == [4, 3, 3]


def _masker() -> Masker:
    return Masker(vocab_size=1000, special_ids=SPECIAL)


def _take(loader: StatefulLoader, n: int) -> list:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            return batches
    raise AssertionError("stream ended")


def _same(a, b) -> bool:
    if isinstance(a, MaskedBatch):
        return all(torch.equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


@pytest.mark.parametrize("masked", [False, True])
def test_exact_resume_two_ranks_two_workers(shard_dir: Path, masked: bool) -> None:
    k, more = 5, 6
    for rank in range(2):
        make = lambda: _stream(shard_dir, rank=rank, world_size=2, masker=_masker() if masked else None)  # noqa: E731
        straight = StatefulLoader(make(), num_workers=2)
        reference = _take(straight, k + more)
        first = StatefulLoader(make(), num_workers=2)
        _take(first, k)
        state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip
        assert state["batches"] == k and state["rank"] == rank and state["world_size"] == 2
        resumed = StatefulLoader(make(), num_workers=2)
        resumed.load_state_dict(state)
        assert all(_same(a, b) for a, b in zip(_take(resumed, more), reference[k:]))
        # the order does not depend on the number of workers
        assert all(_same(a, make().batch(i)) for i, a in enumerate(reference))


def test_stream_iterated_directly_keeps_its_position(shard_dir: Path) -> None:
    stream = _stream(shard_dir)
    it = iter(stream)
    batches = [next(it) for _ in range(3)]
    again = _stream(shard_dir)
    again.load_state_dict(stream.state_dict())
    assert torch.equal(next(iter(again)), stream.batch(3)) and torch.equal(batches[2], stream.batch(2))


@pytest.mark.parametrize("change, named", [({"seed": 1}, "seed"), ({"weights": {"c": 5.0}}, "mix")])
def test_mismatched_settings_are_refused(shard_dir: Path, change: dict, named: str) -> None:
    state = _stream(shard_dir, world_size=2).state_dict()
    with pytest.raises(UserError, match=named):
        _stream(shard_dir, **{"world_size": 2, **change}).load_state_dict(state)


def test_mismatched_data_is_refused(shard_dir: Path, tmp_path: Path) -> None:
    state = _stream(shard_dir).state_dict()
    with pytest.raises(UserError, match="seq_len 8 in the checkpoint, 16 now"):
        _stream(make_shards(tmp_path / "long", seq_len=16)).load_state_dict(state)
    with pytest.raises(UserError, match="manifest") as error:
        _stream(make_shards(tmp_path / "other", tag=1)).load_state_dict(state)
    assert "seq_len" not in str(error.value)
    with pytest.raises(UserError, match="version"):
        _stream(shard_dir).load_state_dict({**state, "version": 99})


def test_bad_weights_are_user_errors(shard_dir: Path) -> None:
    with pytest.raises(UserError, match="unknown corpora"):
        _stream(shard_dir, weights={"z": 1.0})
    with pytest.raises(UserError, match="non-negative"):
        _stream(shard_dir, weights={"a": 0.0, "b": 0.0, "c": 0.0})


def test_validation_visits_each_sequence_once_in_equal_batch_counts(shard_dir: Path) -> None:
    world_size, total = 3, sum(VALID.values())
    streams = [ValidationStream(shard_dir, micro_batch=4, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(s) for s in streams}) == 1
    seen = [_key(row) for s in streams for batch in s for row in batch]
    assert len(seen) == total and len(set(seen)) == total
    loader = validation_loader(ValidationStream(shard_dir, micro_batch=4, masker=_masker()), num_workers=2)
    first, second = list(loader), list(loader)
    assert len(first) == len(second) == -(-total // 4)
    assert all(_same(a, b) for a, b in zip(first, second))  # identical masks every evaluation
    one = ValidationStream(shard_dir, micro_batch=4, corpus="b")
    assert sorted(_key(row) for batch in one for row in batch) == [(1, i) for i in range(VALID["b"])]


def test_validation_refuses_a_split_it_cannot_share_out(shard_dir: Path) -> None:
    with pytest.raises(UserError, match="non-empty batches"):
        ValidationStream(shard_dir, micro_batch=1, world_size=2, corpus="b")
