"""The packed-shard format: write, read (memory-mapped) and verify.

A shard directory looks like

    manifest.json                     written last, atomically: its presence means "complete"
    train/<corpus>/shard-00000.bin    raw little-endian token ids, shape (sequences, seq_len), no header
    validation/<corpus>/shard-00000.bin

Each corpus is packed into shards of its own so the loader can mix corpora by weight. The manifest
records the format version, the tokenizer fingerprint, seq_len, dtype, per-corpus counts and the
sha256 and size of every shard. Readers memory-map shards, so memory does not grow with the corpus.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.data.exclude_config import exclusion_identity
from medtrain.errors import UserError
from medtrain.io import atomic_open, sha256_file, write_json_atomic

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every token id."""
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if vocab_size <= 1 << 32:
        return np.dtype("<u4")
    raise UserError(f"a vocabulary of {vocab_size} tokens does not fit the uint32 shard dtype")


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file: where it is (relative to the shard dir), what it holds, its checksum."""

    path: str
    corpus: str
    split: str
    sequences: int
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class CorpusInfo:
    """What was packed from one corpus (counts are of the train split unless named validation_*)."""

    name: str
    language: str
    domain: str
    weight: float
    documents: int
    tokens: int
    sequences: int
    validation_sequences: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    format_version: int
    seq_len: int
    dtype: str
    vocab_size: int
    tokenizer: str
    tokenizer_fingerprint: str
    special_ids: dict[str, int]
    corpora: list[CorpusInfo]
    shards: list[ShardInfo]
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    """sha256 of every other file prepare wrote (the tokenizer copy, config.yaml), by path in the shard dir."""
    exclusion: dict[str, Any] | None = None
    """What `exclude` kept out: the rule, the evaluation sources (path, sha256), the documents and tokens dropped
    per corpus and source, and each corpus's raw coverage of each source's n-grams (medtrain.data.decontaminate)."""

    def tokenizer_dir(self, shard_dir: str | Path) -> Path:
        """The tokenizer the shards were made with (a copy inside the shard dir)."""
        return Path(shard_dir) / self.tokenizer

    def shards_of(self, split: str, corpus: str | None = None) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split and (corpus is None or s.corpus == corpus)]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def fingerprint(self) -> str:
        """Identifies the exact data a stream reads: every shard's checksum, in manifest order."""
        import hashlib

        digest = hashlib.sha256(f"{self.seq_len}:{self.dtype}".encode())
        for shard in self.shards:
            digest.update(f"{shard.path}:{shard.sha256}".encode())
        if self.exclusion is not None:  # what was kept out is part of what the stream reads
            digest.update(json.dumps(exclusion_identity(self.exclusion), sort_keys=True).encode())
        return digest.hexdigest()[:16]


def write_shard(shard_dir: Path, relpath: str, corpus: str, split: str, tokens: np.ndarray) -> ShardInfo:
    """Write a (sequences, seq_len) token array atomically and return its manifest entry."""
    path = shard_dir / relpath
    with atomic_open(path, "wb") as f:
        f.write(np.ascontiguousarray(tokens).tobytes())
    return ShardInfo(path=relpath, corpus=corpus, split=split, sequences=int(tokens.shape[0]),
                     bytes=path.stat().st_size, sha256=sha256_file(path))


def write_manifest(shard_dir: Path, manifest: Manifest) -> Path:
    """Write manifest.json last: a shard dir without it is an unfinished prepare."""
    path = shard_dir / MANIFEST
    write_json_atomic(path, dataclasses.asdict(manifest))
    return path


def read_manifest(shard_dir: str | Path) -> Manifest:
    """Load and check `manifest.json`; a missing or foreign manifest is a one-line UserError."""
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise UserError("no manifest.json: not a shard directory, or `medtrain prepare` did not finish", shard_dir)
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format_version") != FORMAT_VERSION:
            raise UserError(f"shard format version {raw.get('format_version')!r}; this medtrain reads "
                            f"version {FORMAT_VERSION}: run `medtrain prepare` again", path)
        raw["corpora"] = [CorpusInfo(**c) for c in raw["corpora"]]
        raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
        return Manifest(**raw)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"manifest is damaged ({exc.__class__.__name__})", path) from None


def open_shard(shard_dir: str | Path, manifest: Manifest, shard: ShardInfo) -> np.memmap:
    """Memory-map one shard as a read-only (sequences, seq_len) array, checking its size."""
    path = Path(shard_dir) / shard.path
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise UserError("shard listed in manifest.json is missing", path) from None
    if size != shard.bytes:
        raise UserError(f"shard is {size} bytes, manifest says {shard.bytes}: truncated or replaced; "
                        "run `medtrain prepare --verify`", path)
    return np.memmap(path, dtype=manifest.np_dtype, mode="r", shape=(shard.sequences, manifest.seq_len))


def verify(shard_dir: str | Path) -> Manifest:
    """Check every shard's size and sha256, and every other file prepare wrote (the tokenizer copy pretraining
    loads, config.yaml), against the manifest; the first bad one is a UserError."""
    manifest = read_manifest(shard_dir)
    expected_row = manifest.seq_len * manifest.np_dtype.itemsize
    for shard in manifest.shards:
        path = Path(shard_dir) / shard.path
        if not path.is_file():
            raise UserError("shard listed in manifest.json is missing", path)
        size = path.stat().st_size
        if size != shard.bytes or size != shard.sequences * expected_row:
            raise UserError(f"shard is {size} bytes, expected {shard.sequences * expected_row}: truncated", path)
        if sha256_file(path) != shard.sha256:
            raise UserError("shard checksum does not match manifest.json: the file is corrupted", path)
    for relpath, checksum in manifest.files.items():
        path = Path(shard_dir) / relpath
        if not path.is_file():
            raise UserError("file listed in manifest.json is missing", path)
        if sha256_file(path) != checksum:
            raise UserError("checksum does not match manifest.json: the file is corrupted or was edited", path)
    return manifest
