"""Documents -> fixed-length packed sequences (no padding) -> shards + manifest.json.

Each corpus is tokenized in batches of documents by a pool of worker processes (medtrain.data.encoders: results come back in
order, at most a few batches in flight, so memory stays flat), then packed on its own:

    content stream  = doc_1 [SEP] doc_2 [SEP] doc_3 [SEP] ...
    sequence        = [CLS] + the next seq_len - 1 tokens of the stream

A document longer than a sequence continues in the next one. Whole documents go to the validation
split (a seeded hash of corpus name and document index decides), so the held-out text is never seen in
training. Everything is written into a temporary sibling folder `<output_dir>.tmp-<host>-<pid>`, with
`manifest.json` last, and only then renamed into place: a prepare killed at any moment leaves no
output that looks complete, and the next run removes the leftovers and starts again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from tqdm import tqdm

from medtrain.config import config_to_dict, save_resolved
from medtrain.data.corpus import CorpusConfig, CorpusReader
from medtrain.data.encoders import Encode, EncoderPool, batches, encoder_args
from medtrain.data.exclude_config import ExcludeConfig, exclusion_identity
from medtrain.data.shards import (FORMAT_VERSION, MANIFEST, CorpusInfo, Manifest, ShardInfo, dtype_for_vocab,
                                  read_manifest, write_manifest, write_shard)
from medtrain.errors import UserError
from medtrain.io import pid_alive, sha256_file

if TYPE_CHECKING:  # numpy-only, but imported where an exclude section needs it
    from medtrain.data.decontaminate import ExclusionTally

SEQ_LEN_RANGE = (8, 65536)
_OWN_ENTRIES = {MANIFEST, "config.yaml", "train", "validation"}  # what a finished output_dir holds
# Fields that do not change the shard bytes (the tokenizer's fingerprint stands in for its path).
_RUN_ONLY_FIELDS = ("output_dir", "tokenizer", "num_workers", "batch_size", "overwrite")
@dataclasses.dataclass
class PrepareConfig:
    """`medtrain prepare`: which corpora, which tokenizer, how to pack and where to write."""

    tokenizer: Path  # local tokenizer folder (e.g. a downloaded bert-base-multilingual-cased)
    output_dir: Path  # shard folder to create; it appears only once complete
    corpora: list[CorpusConfig]  # one entry per corpus; each is packed into shards of its own
    data_root: Path | None = None  # relative corpus paths are resolved against this (default: current folder)
    seq_len: int = 128  # tokens per sequence: [CLS] + seq_len - 1 document tokens and [SEP] separators
    # The last, incomplete sequence of each corpus split: "wrap" fills it from the start of the same
    # split (no token is lost, a few are seen twice), "drop" discards it (< seq_len tokens lost).
    tail: Literal["wrap", "drop"] = "wrap"
    validation_fraction: float = 0.01  # share of documents held out, per corpus, in [0, 0.5)
    seed: int = 0  # decides which documents are held out; same seed, same split
    shard_size_mb: float = 64.0  # shard file size (the last shard of a split is smaller); bounds memory
    num_workers: int | None = None  # tokenizer processes; None: one per CPU this job may use; 0: none
    batch_size: int = 1000  # documents per tokenizer call; more is faster, up to memory
    on_decode_error: Literal["fail", "skip"] = "fail"  # undecodable bytes: stop, or drop that document
    overwrite: bool = False  # replace an output_dir that holds shards from a different config or tokenizer
    # Evaluation text to keep out: drop each document holding most of an evaluation document's word n-grams,
    # or naming one of its patients (medtrain.data.exclude_config); recorded in manifest.json
    exclude: ExcludeConfig | None = None

    def __post_init__(self) -> None:
        low, high = SEQ_LEN_RANGE
        if not low <= self.seq_len <= high:
            raise ValueError(f"seq_len must be between {low} and {high} (BERT models take at most 512), "
                             f"got {self.seq_len}")
        if not 0 <= self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in [0, 0.5), e.g. 0.01, got {self.validation_fraction}")
        if not self.corpora:
            raise ValueError("corpora is empty: list at least one corpus (name, path, language, domain)")
        names = [c.name for c in self.corpora]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"corpus names must be unique; repeated: {', '.join(duplicates)}")
        if not (self.shard_size_mb > 0 and math.isfinite(self.shard_size_mb)):
            raise ValueError(f"shard_size_mb must be a positive number, got {self.shard_size_mb}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 tokenizes in this process), got {self.num_workers}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def corpus_path(self, corpus: CorpusConfig) -> Path:
        return self.resolve(corpus.path)

    def resolve(self, path: Path) -> Path:
        """A corpus or exclude path, against data_root."""
        return path if self.data_root is None else self.data_root / path


TOKENIZER_DIR = "tokenizer"


def prepare(cfg: PrepareConfig, config_file: Path | None = None) -> Manifest:
    """Tokenize and pack every corpus into `cfg.output_dir`; returns its manifest. `config_file` is named by the
    errors of the exclude section."""
    readers = _checked_readers(cfg)
    tally = _exclusion(cfg, readers, config_file)
    from medtrain.data.tokenizer import fingerprint, load_tokenizer  # transformers: heavy, and workers skip it

    tokenizer = load_tokenizer(cfg.tokenizer)
    tokenizer_fp = fingerprint(cfg.tokenizer)
    vocab_size = len(tokenizer)
    dtype = dtype_for_vocab(vocab_size)
    out = cfg.output_dir
    if _already_done(cfg, out, tokenizer_fp, tally.identity() if tally else None):
        print(f"{out} already holds shards for this config and tokenizer; nothing to do")
        return read_manifest(out)

    special_ids = {name: int(getattr(tokenizer, f"{name}_token_id")) for name in ("cls", "sep", "pad", "mask", "unk")}
    args = encoder_args(tokenizer)
    _remove_stale_siblings(out)
    tmp = out.with_name(f"{out.name}.tmp-{_HOST}-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        with EncoderPool(cfg.num_workers, args, tally.matcher() if tally else None) as encode:
            packed = [_pack_corpus(cfg, reader, encode, tmp, dtype, special_ids, tally) for reader in readers]
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))  # shards travel with their tokenizer
        save_resolved(cfg, tmp)
        written = sorted(p for p in [*(tmp / TOKENIZER_DIR).rglob("*"), tmp / "config.yaml"] if p.is_file())
        manifest = Manifest(
            format_version=FORMAT_VERSION, seq_len=cfg.seq_len, dtype=dtype.str, vocab_size=vocab_size,
            tokenizer=TOKENIZER_DIR, tokenizer_fingerprint=tokenizer_fp, special_ids=special_ids,
            corpora=[info for info, _ in packed], shards=[s for _, shards in packed for s in shards],
            files={p.relative_to(tmp).as_posix(): sha256_file(p) for p in written},
            exclusion=tally.manifest_entry() if tally else None,
        )
        write_manifest(tmp, manifest)  # last: from here the folder is complete
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def measure_overlap(cfg: PrepareConfig, config_file: Path | None = None) -> dict[str, Any]:
    """`medtrain overlap`: what `exclude` would drop from each corpus, and how much of each evaluation source's
    n-grams each raw corpus holds, without writing anything. Returns the manifest's `exclusion` entry."""
    if cfg.exclude is None:
        raise UserError("overlap measures the exclude section, and this config has none: add exclude: {sources: "
                        "[...]} (the evaluation data)", config_file)
    readers = _checked_readers(cfg)
    tally = _exclusion(cfg, readers, config_file)
    from medtrain.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer)  # token counts, as prepare reports them
    with EncoderPool(cfg.num_workers, encoder_args(tokenizer), tally.matcher()) as encode:
        for reader in readers:
            name = reader.corpus.name
            with tqdm(desc=name, unit="doc", disable=None, file=sys.stderr) as bar:
                for _, lengths, match in encode(batches(reader, cfg.batch_size, bool(reader.fields))):
                    tally.add(name, match, lengths)
                    bar.update(len(lengths))
            tally.end_corpus(name)
            print(tally.summary(name))
    return tally.manifest_entry()


def _checked_readers(cfg: PrepareConfig) -> list[CorpusReader]:
    """A reader per corpus, each checked: a typo in a path should not cost a tokenizer load."""
    fields = tuple(cfg.exclude.by) if cfg.exclude else ()
    readers = [CorpusReader(c, cfg.corpus_path(c), cfg.on_decode_error, fields) for c in cfg.corpora]
    for reader in readers:
        reader.check()
    return readers


def _exclusion(cfg: PrepareConfig, readers: list[CorpusReader], config_file: Path | None) -> ExclusionTally | None:
    """The evaluation sources read and indexed (an `ExclusionTally`), or None without exclude; every problem
    with them is a UserError naming the config file and key, before anything is written."""
    if cfg.exclude is None:
        return None
    from medtrain.data.decontaminate import EvaluationIndex, ExclusionTally, read_source

    try:
        for field in cfg.exclude.by:
            if not any(reader.has_field(field) for reader in readers):
                raise UserError(f"exclude.by: no corpus has a field {field!r} (the fields are read from jsonl, "
                                "parquet and saved records; txt corpora have none)")
        sources = [read_source(source, cfg.resolve(source.path), f"exclude.sources.{i}")
                   for i, source in enumerate(cfg.exclude.sources)]
    except UserError as exc:
        raise UserError(exc.format(), config_file) from None
    index = EvaluationIndex.build(cfg.exclude, sources)
    return ExclusionTally(index, [dataclasses.replace(s, texts=[]) for s in sources], cfg.exclude)  # texts: done


# ----------------------------------------------------------------------------- packing


def _pack_corpus(cfg: PrepareConfig, reader: CorpusReader, encode: Encode, out: Path, dtype: np.dtype,
                 special_ids: dict[str, int], tally: ExclusionTally | None) -> tuple[CorpusInfo, list[ShardInfo]]:
    """Pack one corpus; with an exclusion `tally`, the documents its rule drops never reach a packer, and the
    held-out split is decided over the documents kept (the same split as for a corpus without them)."""
    corpus = reader.corpus
    rows = max(1, int(cfg.shard_size_mb * (1 << 20)) // (cfg.seq_len * dtype.itemsize))
    packers = {split: _Packer(out, corpus.name, split, cfg.seq_len, special_ids, dtype, rows, cfg.tail)
               for split in ("train", "validation")}
    key = _split_key(cfg.seed, corpus.name)
    first = 0  # index of the batch's first document in the corpus
    with tqdm(desc=corpus.name, unit="doc", disable=None, file=sys.stderr) as bar:  # off when not a terminal
        for ids, lengths, match in encode(batches(reader, cfg.batch_size, bool(reader.fields))):
            bar.update(len(lengths))
            if tally is not None:
                tally.add(corpus.name, match, lengths)
                kept = match.source < 0
                ids, lengths = ids[np.repeat(kept, lengths)], lengths[kept]
            held_out = _held_out(key, first, len(lengths), cfg.validation_fraction)
            first += len(lengths)
            packers["train"].add(ids, lengths, ~held_out)
            packers["validation"].add(ids, lengths, held_out)
    if reader.skipped:
        print(f"warning: corpus {corpus.name!r}: skipped {reader.skipped} documents with undecodable bytes "
              f"({reader.path})", file=sys.stderr)
    train, validation = packers["train"], packers["validation"]
    shards = train.finish() + validation.finish()
    print(f"{corpus.name}: {train.documents} documents, {train.tokens} tokens -> {train.sequences} train "
          f"sequences; {validation.documents} documents -> {validation.sequences} validation sequences")
    if tally is not None:
        tally.end_corpus(corpus.name)
        print(tally.summary(corpus.name))
    info = CorpusInfo(name=corpus.name, language=corpus.language, domain=corpus.domain, weight=corpus.weight,
                      documents=train.documents, tokens=train.tokens, sequences=train.sequences,
                      validation_sequences=validation.sequences)
    return info, shards


def _split_key(seed: int, corpus: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(f"{seed}\0{corpus}".encode(), digest_size=8).digest(), "little"))


def _held_out(key: np.uint64, first: int, count: int, fraction: float) -> np.ndarray:
    """Per document: True if held out. splitmix64 of (key + document index), so any batching gives the same split."""
    with np.errstate(over="ignore"):
        x = np.arange(first, first + count, dtype=np.uint64) + key
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)) < np.uint64(int(fraction * (1 << 53)))


class _Packer:
    """Packs one corpus split into rows of [CLS] + seq_len - 1 stream tokens, and rows into shards.

    Holds at most one shard of rows, less than one row of carried-over tokens, and the first row's worth
    of tokens (to wrap the tail): memory does not depend on the corpus size.
    """

    def __init__(self, out: Path, corpus: str, split: str, seq_len: int, special_ids: dict[str, int],
                 dtype: np.dtype, rows_per_shard: int, tail: str):
        self.out, self.corpus, self.split, self.tail = out, corpus, split, tail
        self.width = seq_len - 1
        self.cls, self.sep = special_ids["cls"], special_ids["sep"]
        self.buffer = np.empty((rows_per_shard, seq_len), dtype=dtype)  # pages are touched only as rows fill
        self.filled = 0
        self.carry = np.empty(0, dtype=dtype)
        self.head = np.empty(0, dtype=dtype)
        self.shards: list[ShardInfo] = []
        self.documents = self.tokens = self.sequences = 0

    def add(self, ids: np.ndarray, lengths: np.ndarray, selected: np.ndarray) -> None:
        """Append the selected documents of a batch, each followed by [SEP]."""
        selected = selected & (lengths > 0)
        if not selected.any():
            return
        ids = ids[np.repeat(selected, lengths)]
        lengths = lengths[selected]
        stream = np.empty(ids.size + lengths.size, dtype=self.buffer.dtype)
        ends = np.cumsum(lengths + 1) - 1
        is_token = np.ones(stream.size, dtype=bool)
        is_token[ends] = False
        stream[is_token] = ids
        stream[ends] = self.sep
        self.documents += int(lengths.size)
        self.tokens += int(ids.size)
        if self.head.size < self.width:
            self.head = np.concatenate([self.head, stream[: self.width - self.head.size]])
        self._rows(np.concatenate([self.carry, stream]))

    def _rows(self, stream: np.ndarray) -> None:
        full = stream.size // self.width
        rows = stream[: full * self.width].reshape(full, self.width)
        self.carry = stream[full * self.width:].copy()
        while rows.size:
            take = min(len(rows), len(self.buffer) - self.filled)
            self.buffer[self.filled: self.filled + take, 0] = self.cls
            self.buffer[self.filled: self.filled + take, 1:] = rows[:take]
            self.filled += take
            rows = rows[take:]
            if self.filled == len(self.buffer):
                self._flush()

    def finish(self) -> list[ShardInfo]:
        """Handle the tail per policy, write the last partial shard, and return this split's shards."""
        if self.carry.size and self.tail == "wrap":
            need = self.width - self.carry.size
            self._rows(np.concatenate([self.carry, np.resize(self.head, need)]))  # resize repeats cyclically
        self.carry = self.carry[:0]
        if self.filled:
            self._flush()
        return self.shards

    def _flush(self) -> None:
        relpath = f"{self.split}/{self.corpus}/shard-{len(self.shards):05d}.bin"
        self.shards.append(write_shard(self.out, relpath, self.corpus, self.split, self.buffer[: self.filled]))
        self.sequences += self.filled
        self.filled = 0


# ----------------------------------------------------------------------------- the output folder

_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())


def _signature(config: dict[str, Any], tokenizer_fp: str) -> dict[str, Any]:
    """What decides the shard bytes: the config less run-time knobs, plus the tokenizer's fingerprint."""
    return {**{k: v for k, v in config.items() if k not in _RUN_ONLY_FIELDS}, "tokenizer_fingerprint": tokenizer_fp}


def _already_done(cfg: PrepareConfig, out: Path, tokenizer_fp: str, exclusion: dict[str, Any] | None) -> bool:
    """True if `out` is complete for this config; a UserError if it holds anything else we may not replace."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError("output_dir exists and is not a folder", out)
    entries = {p.name for p in out.iterdir()}
    if MANIFEST not in entries:
        if entries - _OWN_ENTRIES:
            raise UserError("output_dir is not empty and holds files medtrain did not write; choose a new folder",
                            out)
        return False  # an interrupted replacement: ours to redo
    try:
        stored = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        manifest = read_manifest(out)
        same = _signature(stored, manifest.tokenizer_fingerprint) == _signature(config_to_dict(cfg), tokenizer_fp) \
            and exclusion_identity(manifest.exclusion) == exclusion  # the sources' bytes, not only their paths
    except (OSError, yaml.YAMLError, UserError, AttributeError, TypeError):
        same = False
    if same:
        return True
    if not cfg.overwrite:
        raise UserError("output_dir holds shards from a different config, tokenizer or exclude sources; set "
                        "overwrite=true to replace them, or choose another output_dir", out)
    return False


def _remove_stale_siblings(out: Path) -> None:
    """Delete what killed prepares on this host left beside `out` (other hosts' leftovers are not ours to judge)."""
    pattern = re.compile(rf"{re.escape(out.name)}\.(?:tmp|old)-{re.escape(_HOST)}-(\d+)")
    if not out.parent.is_dir():
        return
    for sibling in out.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match and (int(match.group(1)) == os.getpid() or not pid_alive(int(match.group(1)))):  # a reused pid too
            shutil.rmtree(sibling, ignore_errors=True)


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old one stops looking complete before it goes."""
    if out.exists():
        (out / MANIFEST).unlink(missing_ok=True)
        old = out.with_name(f"{out.name}.old-{_HOST}-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
