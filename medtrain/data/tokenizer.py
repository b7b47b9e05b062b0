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
                    lowercase: bool = False) -> PreTrainedTokenizerFast:
    """Build a BERT WordPiece tokenizer from `texts` and save it so `AutoTokenizer` loads it from `out_dir`.

    Cased by default, like multilingual BERT, and accent-preserving so Romanian diacritics survive. The
    vocabulary is chosen here rather than by the Rust WordPiece trainer, because that trainer breaks count ties
    in hash-map order (huggingface/tokenizers#1794) and so gives a different vocabulary on every run; a study
    on the sample data must be the same draw each time. It holds the special tokens, every character seen
    (alone and as a `##` continuation, so nothing becomes [UNK]), then the most frequent words, ties broken by
    the word itself, up to `vocab_size` (the alphabet is kept whole even past it). A rarer word is split into the longest known pieces: a word-level
    vocabulary, fit for the sample data and tests; real runs use the model's own tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else []))
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted({char for word in counts for char in word})
    vocab = dict.fromkeys([*SPECIAL_TOKENS, *alphabet, *(f"##{char}" for char in alphabet)])
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word)
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
