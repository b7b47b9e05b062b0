"""MLM masking: choose positions per batch, replace them 80/10/10, return the masked positions only.

Why positions only: the vocabulary projection (hidden x ~120k rows for mBERT) dominates the MLM head; running
it on the ~15% masked rows instead of on every token saves most of that cost. So a batch carries
`masked_positions` (flat indices into batch*seq_len) and `masked_labels` instead of a dense -100 label matrix.

Every random draw comes from a `torch.Generator` the caller passes; `batch_generator(seed, rank, batch)` seeds
one from the batch's identity, so a resumed run masks exactly as the uninterrupted one did.

Whole-word masking picks words, not tokens: a token whose vocabulary string starts with "##" continues the
previous word (`continuation_lookup` builds that table once from the tokenizer). Word ids are a cumsum over
word starts, so it is as vectorised as token masking.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch

from medtrain.errors import UserError

MASK_FRACTION = 0.8  # of the chosen tokens become [MASK] (BERT's recipe) ...
RANDOM_FRACTION = 0.1  # ... become a random non-special token; the remaining 10% stay unchanged
_SEED_TAG = 0x6D61736B  # "mask": keeps these generators apart from other users of the same run seed


class MaskedBatch(NamedTuple):
    """One masked micro-batch (a NamedTuple so DataLoader collation and pin_memory keep its type)."""

    input_ids: torch.Tensor  # (batch, seq_len) int64, after replacement
    masked_positions: torch.Tensor  # (n_masked,) int64, ascending flat indices into batch*seq_len
    masked_labels: torch.Tensor  # (n_masked,) int64, the original ids at those positions

    @property
    def num_masked(self) -> int:
        return len(self.masked_positions)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> MaskedBatch:
        """On `device`; non-blocking by default, as the loader pins memory when CUDA is available."""
        return MaskedBatch(*(t.to(device, non_blocking=non_blocking) for t in self))


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """MLM masking settings (the `masking:` section of a pretraining config)."""

    probability: float = 0.15  # share of maskable tokens (or of words, with whole_word) chosen per batch
    whole_word: bool = False  # choose whole words: all "##" pieces of a chosen word are masked with it

    def __post_init__(self) -> None:
        if not 0.0 < self.probability < 1.0:
            raise ValueError(f"masking.probability must be between 0 and 1 (exclusive), got {self.probability}")


class _HasVocab(Protocol):
    def get_vocab(self) -> dict[str, int]: ...


def continuation_lookup(vocab: _HasVocab | Sequence[str]) -> torch.Tensor:
    """`is_continuation[id]`: True where the token is a "##" piece continuing the previous word.

    Takes a tokenizer (anything with `get_vocab()`, added tokens included) or a list of token strings by id.
    Built once per run; whole-word masking then needs only a table lookup per batch.
    """
    if isinstance(vocab, Sequence):
        tokens = list(vocab)
    else:
        by_token = vocab.get_vocab()
        tokens = [""] * (max(by_token.values()) + 1)
        for token, index in by_token.items():
            tokens[index] = token
    return torch.tensor([token.startswith("##") for token in tokens], dtype=torch.bool)


def batch_generator(seed: int, rank: int, batch_index: int) -> torch.Generator:
    """A generator seeded from the batch's identity, so masking does not depend on what ran before."""
    state = np.random.SeedSequence([_SEED_TAG, seed, rank, batch_index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class Masker:
    """Applies MLM masking to int64 token batches; never touches a special token (CLS, SEP, PAD, MASK, UNK, ...)."""

    def __init__(self, vocab_size: int, special_ids: Mapping[str, int], config: MaskingConfig = MaskingConfig(),
                 is_continuation: torch.Tensor | None = None):
        """`is_continuation` (from `continuation_lookup`) is needed, and only used, with `config.whole_word`."""
        if "mask" not in special_ids:
            raise UserError("the shard manifest names no [MASK] token id (special_ids.mask): run `medtrain prepare` "
                            "with a BERT-style tokenizer")
        if config.whole_word and is_continuation is None:
            raise UserError("masking.whole_word needs the tokenizer's vocabulary to find '##' word pieces")
        self.config = config
        self.mask_id = int(special_ids["mask"])
        self._special = self._lookup(vocab_size, special_ids.values())
        self._replacements = torch.nonzero(~self._special).squeeze(1)
        self._continuation = _fit(is_continuation, vocab_size) if config.whole_word else None

    @staticmethod
    def _lookup(vocab_size: int, ids: Iterable[int]) -> torch.Tensor:
        table = torch.zeros(vocab_size, dtype=torch.bool)
        table[torch.tensor(sorted(set(ids)), dtype=torch.long)] = True
        return table

    def __call__(self, input_ids: torch.Tensor, generator: torch.Generator) -> MaskedBatch:
        """Mask a (batch, seq_len) int64 batch; at least one token is masked whenever one is maskable."""
        ids = input_ids.reshape(-1)
        maskable = ~self._special[ids]
        chosen, word = self._choose(ids, maskable, generator)
        if not bool(chosen.any()) and bool(maskable.any()):
            chosen = self._choose_one(maskable, word, generator)
        positions = torch.nonzero(chosen).squeeze(1)
        labels = ids[positions]
        masked = ids.clone()
        masked[positions] = self._replace(labels, generator)
        return MaskedBatch(masked.view_as(input_ids), positions, labels)

    def _choose(self, ids: torch.Tensor, maskable: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bernoulli per token, or per word with whole-word masking (then also the word id of every token)."""
        p = self.config.probability
        if self._continuation is None:
            return (torch.rand(ids.shape, generator=generator) < p) & maskable, None
        # a special token is a word of its own, so a "##" piece after [CLS] or [SEP] cannot join a masked word
        starts = ~self._continuation[ids] | ~maskable
        word = torch.cumsum(starts, 0) - 1
        chosen_word = torch.rand(int(word[-1]) + 1, generator=generator) < p
        return chosen_word[word] & maskable, word

    @staticmethod
    def _choose_one(maskable: torch.Tensor, word: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """The fallback when the draw chose nothing: one random maskable token (with its whole word)."""
        candidates = torch.nonzero(maskable).squeeze(1)
        pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
        if word is None:
            chosen = torch.zeros_like(maskable)
            chosen[pick] = True
            return chosen
        return (word == word[pick]) & maskable

    def _replace(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """80% [MASK], 10% a random non-special token, 10% unchanged."""
        u = torch.rand(labels.shape, generator=generator)
        out = torch.where(u < MASK_FRACTION, self.mask_id, labels)
        random = (u >= MASK_FRACTION) & (u < MASK_FRACTION + RANDOM_FRACTION)
        draws = torch.randint(len(self._replacements), (int(random.sum()),), generator=generator)
        out[random] = self._replacements[draws]
        return out


def _fit(table: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Cut or pad (with False) a per-token table to the shard vocabulary, so every token id indexes it."""
    out = torch.zeros(vocab_size, dtype=torch.bool)
    n = min(vocab_size, len(table))
    out[:n] = table[:n].to(torch.bool)
    return out
