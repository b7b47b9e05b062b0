"""MLM masking: rates, 80/10/10, special tokens, whole words, determinism, labels."""

from __future__ import annotations

import pytest
import torch

from medtrain.data.masking import (MASK_FRACTION, RANDOM_FRACTION, Masker, MaskingConfig, batch_generator,
                                   continuation_lookup)
from medtrain.errors import UserError

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
VOCAB = 1000
CONTINUATION = torch.arange(VOCAB) >= 600  # ids 600.. stand for "##" pieces


def _batch(seed: int, shape: tuple[int, int] = (32, 128)) -> torch.Tensor:
    """Random ids with [CLS] first, some [SEP]/[PAD]/[UNK], and word pieces."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, shape, generator=g)
    specials = torch.tensor([0, 1, 3])
    sprinkle = torch.rand(shape, generator=g) < 0.05
    ids[sprinkle] = specials[torch.randint(3, (int(sprinkle.sum()),), generator=g)]
    ids[:, 0] = SPECIAL["cls"]
    return ids


def _mask_many(masker: Masker, n: int = 60):
    for i in range(n):
        ids = _batch(i)
        yield ids, masker(ids, batch_generator(0, 0, i))


def test_rates_and_replacements_follow_bert() -> None:
    masker = Masker(VOCAB, SPECIAL)
    maskable = chosen = as_mask = unchanged = 0
    for ids, out in _mask_many(masker):
        flat, new = ids.reshape(-1), out.input_ids.reshape(-1)[out.masked_positions]
        maskable += int((flat > 4).sum())
        chosen += len(out.masked_positions)
        as_mask += int((new == SPECIAL["mask"]).sum())
        unchanged += int((new == out.masked_labels).sum())
        assert (new > 4).logical_or(new == SPECIAL["mask"]).all()  # random replacements are never special
    assert abs(chosen / maskable - 0.15) < 0.005
    assert abs(as_mask / chosen - MASK_FRACTION) < 0.01
    assert abs(unchanged / chosen - (1 - MASK_FRACTION - RANDOM_FRACTION)) < 0.01
    assert abs((chosen - as_mask - unchanged) / chosen - RANDOM_FRACTION) < 0.01


@pytest.mark.parametrize("whole_word", [False, True])
def test_never_masks_specials_and_labels_are_the_originals(whole_word: bool) -> None:
    masker = Masker(VOCAB, SPECIAL, MaskingConfig(whole_word=whole_word), is_continuation=CONTINUATION)
    for ids, out in _mask_many(masker, 20):
        flat = ids.reshape(-1)
        assert (flat[out.masked_positions] > 4).all()
        assert torch.equal(out.masked_labels, flat[out.masked_positions])
        assert (out.masked_positions.diff() > 0).all()
        untouched = torch.ones_like(flat, dtype=torch.bool)
        untouched[out.masked_positions] = False
        assert torch.equal(out.input_ids.reshape(-1)[untouched], flat[untouched])
        assert out.input_ids.dtype == out.masked_positions.dtype == out.masked_labels.dtype == torch.int64
        assert out.num_masked == len(out.masked_labels) and all(map(torch.equal, out.to("cpu"), out))


def test_whole_word_masks_all_pieces_of_a_word_together() -> None:
    masker = Masker(VOCAB, SPECIAL, MaskingConfig(whole_word=True), is_continuation=CONTINUATION)
    chosen_words = words = 0
    for ids, out in _mask_many(masker, 30):
        flat = ids.reshape(-1)
        special = flat <= 4
        word = torch.cumsum(~CONTINUATION[flat] | special, 0)
        hit = torch.zeros_like(flat, dtype=torch.bool)
        hit[out.masked_positions] = True
        for w in torch.unique(word[hit]):  # every maskable piece of a hit word is hit
            assert hit[(word == w) & ~special].all()
        words += int(torch.unique(word[~special]).numel())
        chosen_words += int(torch.unique(word[hit]).numel())
    assert abs(chosen_words / words - 0.15) < 0.01


def test_deterministic_by_seed_rank_and_batch() -> None:
    masker = Masker(VOCAB, SPECIAL)
    ids = _batch(1)
    a, b = masker(ids, batch_generator(7, 1, 42)), masker(ids, batch_generator(7, 1, 42))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for other in (batch_generator(8, 1, 42), batch_generator(7, 0, 42), batch_generator(7, 1, 43)):
        assert not torch.equal(masker(ids, other).masked_positions, a.masked_positions)


def test_at_least_one_token_is_masked() -> None:
    masker = Masker(VOCAB, SPECIAL, MaskingConfig(probability=0.001))
    ids = torch.tensor([[2, 700, 701, 3, 0, 0]])
    for i in range(50):
        out = masker(ids, batch_generator(0, 0, i))
        assert len(out.masked_positions) >= 1 and set(out.masked_positions.tolist()) <= {1, 2}
    whole = Masker(VOCAB, SPECIAL, MaskingConfig(probability=0.001, whole_word=True), CONTINUATION)
    ids = torch.tensor([[2, 50, 700, 701, 3]])  # one word: 50 ##700 ##701
    assert whole(ids, batch_generator(0, 0, 0)).masked_positions.tolist() == [1, 2, 3]


class _Tokenizer:
    def get_vocab(self) -> dict[str, int]:
        return {"[PAD]": 0, "hos": 2, "##pital": 1, "##s": 3}


def test_continuation_lookup_from_a_tokenizer_or_a_list() -> None:
    assert continuation_lookup(_Tokenizer()).tolist() == [False, True, False, True]
    assert continuation_lookup(["[CLS]", "pat", "##ient"]).tolist() == [False, False, True]


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="probability"):
        MaskingConfig(probability=1.5)
    with pytest.raises(UserError, match="whole_word"):
        Masker(VOCAB, SPECIAL, MaskingConfig(whole_word=True))
    with pytest.raises(UserError, match="MASK"):
        Masker(VOCAB, {"cls": 2})
