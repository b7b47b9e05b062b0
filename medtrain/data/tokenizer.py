"""Tokenizers from local folders only, and a small, deterministic WordPiece builder for when none is given.

Compute nodes have no internet, so a tokenizer is always a local directory (for example a downloaded
bert-base-multilingual-cased). `fingerprint()` identifies a tokenizer by the bytes of its vocabulary
files, so shards made with one tokenizer are never trained with another.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

from medtrain.errors import UserError

_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FRAGMENT_LENGTHS = range(2, 6)
"""Characters per word fragment: a domain word splits into a few pieces (like mBERT's), not into letters."""


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a local directory; a clear error if it is missing or not fast."""
    path = Path(path)
    if not path.is_dir():
        raise UserError("tokenizer directory not found (give a local folder, e.g. a downloaded mBERT)", path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from this folder ({exc.__class__.__name__})", path) from None
    if not tokenizer.is_fast:
        raise UserError("medtrain needs a fast (Rust) tokenizer; this folder gives a slow one", path)
    for token in ("cls_token", "sep_token", "mask_token", "pad_token"):
        if getattr(tokenizer, token) is None:
            raise UserError(f"tokenizer has no {token}; medtrain needs a BERT-style tokenizer", path)
    return tokenizer


def fingerprint(path: str | Path) -> str:
    """sha256 over the tokenizer's vocabulary files (names and bytes), first 16 hex digits."""
    digest = hashlib.sha256()
    for name in _VOCAB_FILES:
        file = Path(path) / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def train_wordpiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 8000,
                    lowercase: bool = False, whole_word_texts: Iterable[str] | None = None,
                    common_share: float = 0.0) -> PreTrainedTokenizerFast:
    """Build a BERT WordPiece tokenizer from `texts` and save it so `AutoTokenizer` loads it from `out_dir`.

    Cased by default, like multilingual BERT, and accent-preserving so Romanian diacritics survive. The
    vocabulary is chosen here rather than by the Rust WordPiece trainer, because that trainer breaks count ties
    in hash-map order (huggingface/tokenizers#1794) and so gives a different vocabulary on every run; a study
    on the sample data must be the same draw each time. It holds the special tokens, every character seen
    (alone and as a `##` continuation, so nothing becomes [UNK]; the alphabet is kept whole even past
    `vocab_size`), then:

    - `whole_word_texts` None: the most frequent words of `texts`, ties broken by the word, up to `vocab_size`.
      A word-level vocabulary, fit for tests; a rarer word is spelt in characters.
    - `whole_word_texts` given (general-domain text): every word of those texts whole, most frequent first, then
      the most frequent `common_share` of the other words of `texts` (the domain's common terms), then the most
      frequent fragments of the words of `texts` (`fragments`) up to `vocab_size`. A rarer word seen only
      outside `whole_word_texts` (a rare clinical or biomedical term) is split into a few known pieces, as
      multilingual BERT splits rare domain words, so fertility differs between domains as it does on real text.

    Real runs use the model's own tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else []))
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def word_counts(source: Iterable[str]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for text in source:
            counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
        return counts

    counts = word_counts(texts)
    alphabet = sorted({char for word in counts for char in word})
    vocab = dict.fromkeys([*SPECIAL_TOKENS, *alphabet, *(f"##{char}" for char in alphabet)])
    if whole_word_texts is None:
        ranked = _ranked(counts)
    else:
        general = word_counts(whole_word_texts)
        others = _ranked(Counter({word: n for word, n in counts.items() if word not in general}))
        ranked = _ranked(general) + others[:round(common_share * len(others))] + _ranked(fragments(counts))
    for token in ranked:
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(token)
    tok = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]",
                                     continuing_subword_prefix="##"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, strip_accents=False,
                             unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]")
    fast.save_pretrained(str(out_dir))
    return fast


def fragments(counts: Counter[str]) -> Counter[str]:
    """Character n-grams (FRAGMENT_LENGTHS) of each word, weighted by the word's count: proper word-initial
    prefixes as they are, inner and final ones as `##` continuations. A fragment is never the whole word."""
    out: Counter[str] = Counter()
    for word, count in counts.items():
        for n in FRAGMENT_LENGTHS:
            if n < len(word):
                out[word[:n]] += count
            for start in range(1, len(word) - n + 1):
                out[f"##{word[start:start + n]}"] += count
    return out


def _ranked(counts: Counter[str]) -> list[str]:
    """Most frequent first, ties broken by the string, so the order never depends on hash order."""
    return [token for token, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
