"""Resizing a run: the stream re-partitioned from its global position, the global-batch check, the audit file's
trimming (no engine: DeepSpeed's side is tested in tests/integration/test_elastic_resume.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from medtrain.checkpoint import AuditLog, Saved, audit_path, check_global_batch, trim_audit
from medtrain.data.stream import Audited, PackedStream, StatefulLoader, global_position
from medtrain.errors import UserError

from test_stream import _key, _masker, make_shards


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))


def _streams(shard_dir: Path, world: int, micro: int, **kwargs) -> list[PackedStream]:
    return [PackedStream(shard_dir, micro_batch=micro, rank=r, world_size=world, block_size=16, seed=5, **kwargs)
            for r in range(world)]


def _read(streams: list[PackedStream], batches: int) -> Counter:
    """The ids the ranks read in their next `batches` batches, through each stream's own iterator."""
    seen: Counter = Counter()
    for stream in streams:
        it = iter(stream)
        for _ in range(batches):
            seen.update(next(it).ids.tolist())
    return seen


# (world, micro-batch, batches per rank) before and after; together they read past a stream epoch (the small
# corpus repeats within one), so some sequences appear more than once in the multiset
@pytest.mark.parametrize("before, after", [((2, 4, 30), (1, 8, 40)), ((1, 12, 20), (4, 3, 45)),
                                           ((2, 6, 25), (3, 4, 30)), ((4, 2, 50), (2, 4, 60))])
def test_n_then_m_ranks_read_what_one_uninterrupted_run_reads(shard_dir: Path, before, after) -> None:
    (w1, m1, k1), (w2, m2, k2) = before, after
    first = _streams(shard_dir, w1, m1, with_ids=True)
    seen = _read(first, k1)
    saved = [json.loads(json.dumps(s.state_dict())) for s in first]  # through JSON, as checkpoints keep it
    assert {global_position(state) for state in saved} == {w1 * m1 * k1}
    second = _streams(shard_dir, w2, m2, with_ids=True)
    for stream in second:  # every new rank resumes from rank 0's state, as checkpoint.resume hands it out
        stream.load_state_dict(saved[0])
    seen += _read(second, k2)
    total = w1 * m1 * k1 + w2 * m2 * k2
    [straight] = _streams(shard_dir, 1, total, with_ids=True)
    assert seen == Counter(straight.sequence_ids(0).tolist())
    assert sum(seen.values()) == total and max(seen.values()) >= 2  # repeats, so counts matter, not just sets
    # and the resized stream saves a state that resumes it exactly (its origin kept)
    state = second[-1].state_dict()
    assert state["origin"] == w1 * m1 * k1 and state["batches"] == k2
    again = _streams(shard_dir, w2, m2, with_ids=True)[-1]
    again.load_state_dict(state)
    assert torch.equal(again.batch(again.position).ids, second[-1].batch(k2).ids)


def test_ids_are_the_tokens_identity_and_do_not_depend_on_the_partition(shard_dir: Path) -> None:
    [stream] = _streams(shard_dir, 1, 7)
    batch = stream.tokens(3)
    manifest_sizes = np.array([301, 170, 53])  # make_shards' corpora a, b, c, in manifest order
    offsets = np.cumsum(manifest_sizes) - manifest_sizes
    expected = [offsets[corpus] + index for corpus, index in map(_key, batch)]
    assert stream.sequence_ids(3).tolist() == expected
    two = _streams(shard_dir, 2, 7)
    assert two[1].sequence_ids(1).tolist() == stream.sequence_ids(3).tolist()  # global batch 3 either way


def test_same_size_resume_is_unchanged_and_audited_batches_cross_workers(shard_dir: Path) -> None:
    make = lambda: _streams(shard_dir, 2, 4, masker=_masker(), with_ids=True)[1]  # noqa: E731
    loader = StatefulLoader(make(), num_workers=2)
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    state = loader.state_dict()
    assert "origin" not in state  # a run never resized saves what it saved before
    resumed = StatefulLoader(make(), num_workers=2)
    resumed.load_state_dict(state)
    after = next(iter(resumed))
    assert isinstance(after, Audited) and resumed.stream.position == 4
    reference = make()
    for k, got in enumerate([*first, after]):
        want = reference.batch(k)
        assert torch.equal(got.ids, want.ids) and all(torch.equal(a, b) for a, b in zip(got.batch, want.batch))


def test_a_resized_state_must_still_match_the_data_and_seed(shard_dir: Path) -> None:
    state = _streams(shard_dir, 2, 4)[0].state_dict()
    with pytest.raises(UserError, match="seed 5 in the checkpoint, 6 now"):
        PackedStream(shard_dir, micro_batch=8, seed=6, block_size=16).load_state_dict(state)


def _saved(micro: int, accum: int, world: int) -> Saved:
    return Saved(Path("/run/checkpoints"), "step-00000004", 4, world, micro, accum, {})


def test_global_batch_error_names_the_settings_that_keep_it() -> None:
    check_global_batch(_saved(8, 1, 2), 16, 1, 1)  # kept: no error
    check_global_batch(_saved(8, 1, 2), 4, 1, 4)
    with pytest.raises(UserError) as error:
        check_global_batch(_saved(8, 1, 2), 8, 1, 1)
    message = str(error.value)
    assert "written with global batch 16 = 8 x 1 x 2" in message
    assert "with 1 rank use data.micro_batch_size=16 or train.grad_accum=2" in message
    assert message.startswith("/run/checkpoints/step-00000004: ")
    with pytest.raises(UserError, match="with 3 ranks use data.micro_batch_size=4 train.grad_accum=1"):
        check_global_batch(_saved(4, 3, 1), 8, 8, 3)  # neither setting alone keeps 12 on 3 ranks
    with pytest.raises(UserError, match="use a number of ranks that divides 16"):
        check_global_batch(_saved(8, 1, 2), 8, 1, 3)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resumed_audit_replaces_the_steps_it_redoes(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, 0, 2, 0)
    for step in range(1, 7):
        log.write(step, [step * 10, step * 10 + 1])
    log.close()
    orphan = audit_path(tmp_path, 2)  # a rank of an earlier, larger allocation
    orphan.write_text("".join(json.dumps({"step": s, "ids": [s]}) + "\n" for s in range(1, 7)))
    with audit_path(tmp_path, 0).open("a") as f:
        f.write('{"step": 7, "ids": [7')  # a line a kill cut short

    resumed = AuditLog(tmp_path, 0, 2, 4)  # the checkpoint was at step 4: steps 5 and 6 are redone
    for step in (5, 6):
        resumed.write(step, [step])
    resumed.sync()
    resumed.close()
    assert _lines(audit_path(tmp_path, 0)) == [*({"step": s, "ids": [s * 10, s * 10 + 1]} for s in range(1, 5)),
                                               {"step": 5, "ids": [5]}, {"step": 6, "ids": [6]}]
    assert [r["step"] for r in _lines(orphan)] == [1, 2, 3, 4]


def test_trimming_leaves_other_ranks_to_themselves(tmp_path: Path) -> None:
    other = audit_path(tmp_path, 1)
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"step": 9, "ids": []}) + "\n")
    AuditLog(tmp_path, 0, 2, 3).close()  # rank 1 is in this world: it trims its own file
    assert _lines(other) == [{"step": 9, "ids": []}]
    trim_audit(other, 3)
    assert other.read_text() == ""
    trim_audit(tmp_path / "missing.jsonl", 3)  # nothing to trim
    assert not (tmp_path / "missing.jsonl").exists()
