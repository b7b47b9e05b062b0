"""Vocabulary extension: the corpora's frequent words that the tokenizer shreds become tokens of their own.

A clinical word that mBERT splits into many pieces ("cardiomiopatie" -> 5 pieces) costs sequence length and
gives the model no single embedding to learn. `select_words` picks the most frequent such words as the tokenizer
itself sees them; `extend_tokenizer` appends them to the end of the WordPiece vocabulary (old ids unchanged, so a
model grows by rows only) and records each word's old pieces, from which `medtrain.model.extend_embeddings` starts
the new rows as the mean of the pieces' rows.
"""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from medtrain.errors import UserError
from medtrain.io import replace_dir_atomic, write_json_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EXTENSION_FILE = "vocabulary_extension.json"
MIN_PIECES = 3


@dataclasses.dataclass
class VocabularyConfig:
    """How a pretraining variant extends its tokenizer."""

    add: int
    """How many words to add: the most frequent whole words of the variant's corpora that the tokenizer splits
    into 3 or more pieces (ties broken by the word)."""
    min_count: int = 5
    """A word needs at least this many occurrences in the corpora to be added."""

    def __post_init__(self) -> None:
        if self.add < 1:
            raise ValueError(f"vocabulary.add must be >= 1 (got {self.add})")
        if self.min_count < 1:
            raise ValueError(f"vocabulary.min_count must be >= 1 (got {self.min_count})")


def select_words(texts: Iterable[str], tokenizer: PreTrainedTokenizerFast, cfg: VocabularyConfig) -> list[str]:
    """The `cfg.add` most frequent words (normalized and pre-tokenized as the tokenizer does) that it splits
    into 3+ pieces, occur `cfg.min_count`+ times, are not in its vocabulary and are not just digits/punctuation.

    Raises ValueError (no text quoted) when there are fewer such words than `cfg.add`."""
    backend = tokenizer.backend_tokenizer
    normalizer, pre_tokenizer = backend.normalizer, backend.pre_tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        normalized = normalizer.normalize_str(text) if normalizer is not None else text
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalized))
    vocab = tokenizer.get_vocab()
    candidates = sorted(
        ((count, word) for word, count in counts.items()
         if count >= cfg.min_count and word not in vocab and not _digits_or_punctuation(word)
         and len(backend.model.tokenize(word)) >= MIN_PIECES),
        key=lambda item: (-item[0], item[1]))
    if len(candidates) < cfg.add:
        raise ValueError(f"vocabulary.add is {cfg.add} but the corpora have only {len(candidates)} words with "
                         f">= {cfg.min_count} occurrences that split into {MIN_PIECES}+ pieces")
    return [word for _, word in candidates[:cfg.add]]


def _digits_or_punctuation(word: str) -> bool:
    """Numbers, punctuation and symbols carry no clinical term worth a token of its own."""
    return all(unicodedata.category(char)[0] in "NPS" for char in word)


def extend_tokenizer(tokenizer_dir: Path, words: list[str], out_dir: Path) -> Path:
    """Write to `out_dir` (atomically) the tokenizer of `tokenizer_dir` with `words` appended to its WordPiece
    vocabulary, plus `vocabulary_extension.json`: the base vocabulary size, the words, and each word's ids
    under the old tokenizer (no special tokens)."""
    from tokenizers import Tokenizer

    from medtrain.data.tokenizer import load_tokenizer  # transformers (and torch): kept off the config path

    tokenizer = load_tokenizer(tokenizer_dir)
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"].get("type") != "WordPiece":
        raise UserError("vocabulary extension needs a WordPiece (BERT) tokenizer", tokenizer_dir)
    vocab: dict[str, int] = state["model"]["vocab"]
    base = len(tokenizer)
    if sorted(vocab.values()) != list(range(base)):
        raise UserError("vocabulary extension needs a tokenizer whose WordPiece vocabulary holds ids 0..V-1 "
                        "and no tokens added beyond it", tokenizer_dir)
    if len(set(words)) != len(words) or any(word in vocab for word in words):
        raise ValueError("extension words must be distinct and not already in the vocabulary")
    pieces = [tokenizer.backend_tokenizer.encode(word, add_special_tokens=False).ids for word in words]
    vocab.update({word: base + i for i, word in enumerate(words)})

    def write(tmp: Path) -> None:
        tokenizer.save_pretrained(str(tmp))  # tokenizer_config.json etc., as transformers writes them
        saved = json.loads((tmp / "tokenizer.json").read_text(encoding="utf-8"))
        saved["model"]["vocab"] = vocab
        Tokenizer.from_str(json.dumps(saved)).save(str(tmp / "tokenizer.json"))
        if (tmp / "vocab.txt").is_file():  # older transformers also write it; keep it the same vocabulary
            (tmp / "vocab.txt").write_text("".join(f"{token}\n" for token in sorted(vocab, key=vocab.get)),
                                           encoding="utf-8")
        extended = load_tokenizer(tmp)
        if extended.convert_tokens_to_ids(words) != [vocab[word] for word in words]:
            raise RuntimeError("the extended tokenizer does not load with the new words at their ids")
        write_json_atomic(tmp / EXTENSION_FILE, {"base_vocab_size": base, "words": words, "pieces": pieces})

    return replace_dir_atomic(out_dir, write)
