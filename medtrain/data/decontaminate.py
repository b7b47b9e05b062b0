"""Evaluation text out of the pretraining text: an n-gram index of the evaluation documents and the rule
`prepare` applies to every pretraining document as its tokenizer workers stream it.

The rule (`ExcludeConfig`): a pretraining document is dropped when it holds at least `containment` of the
distinct word n-grams of one evaluation document, or when its record names a patient of an evaluation source.
Containment, not "any shared n-gram", because clinical text is templated: unrelated notes share template
phrases, while a copy, a lightly edited copy or a record that embeds an evaluation document holds all of it.

Words are lowercased runs of letters and digits (`\\w+`): whitespace, line breaks, case and the tokenisation of
punctuation (column files split "fever," into two tokens) do not hide a copy. The index maps each evaluation word
to an id (a word no evaluation document has cannot be part of a matching n-gram, so it breaks the n-gram), and
each n-gram of ids to a 64-bit hash; the hashes are sorted, with the evaluation documents holding each (CSR).
Memory is that of the evaluation side; the pretraining side is matched batch by batch, in numpy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.data.exclude_config import ExcludeConfig, ExcludeSource, exclusion_identity
from medtrain.errors import UserError
from medtrain.io import sha256_path

WORD = re.compile(r"\w+")
_PRIME = np.uint64(0x100000001B3)  # FNV's 64-bit prime: the polynomial's base
KEPT = -1
BITMAP_BITS = 27  # 16 MiB: with a few million evaluation n-grams, a few percent of other hashes pass it
"""`Matcher.match`'s answer for a document no rule drops."""


def words(text: str) -> list[str]:
    """The normalised words of a text: case-folded runs of letters and digits (casefold, not lower: an upper-cased
    copy of "µg" folds back to the same word)."""
    return WORD.findall(text.casefold())


# ----------------------------------------------------------------------------- the evaluation side


@dataclasses.dataclass
class EvaluationSource:
    """One source as read: its documents' texts and patients (no text ever leaves this object into a log)."""

    name: str
    path: Path
    format: str
    sha256: str
    texts: list[str]
    patients: set[str]


def read_source(source: ExcludeSource, path: Path, key: str) -> EvaluationSource:
    """Read one evaluation source with fine-tuning's readers; a problem is a UserError naming `key`."""
    if not path.exists():
        raise UserError(f"{key}: evaluation source not found: {path}")
    try:
        fmt = source.resolved_format(path)
    except ValueError as exc:
        raise UserError(f"{key}: {exc}") from None
    try:
        if fmt in ("jsonl", "csv"):
            from medtrain.data.documents import read_notes

            notes = read_notes(path, fmt)
            texts, patients = [n.text for n in notes], {n.patient_id for n in notes}
        else:
            from medtrain.data.ner import read_ner
            from medtrain.data.ner_format import BratFormat, ColumnFormat

            if fmt == "conllu" and (source.columns is None or not isinstance(source.columns.tag, str)):
                raise UserError("format conllu needs columns.tag, e.g. misc:BioNERLabel")
            columns = source.columns or ColumnFormat()
            brat = source.brat or BratFormat(offset_mismatch="skip")  # only the text counts here
            with _quiet(logging.getLogger("medtrain.data.ner")):  # annotation repairs: fine-tuning reports those
                texts, patients = [d.text or "" for d in read_ner(path, fmt, columns, brat)], set()  # type: ignore[arg-type]
    except UserError as exc:
        raise UserError(f"{key}: {exc.format()}") from None
    return EvaluationSource(source.label, path, fmt, sha256_path(path), texts, patients)


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclasses.dataclass
class EvaluationIndex:
    """The evaluation documents' n-grams, hashed and sorted, and the patients of the evaluation sources.

    Picklable (plain arrays, a dict and a set): each tokenizer worker receives one copy."""

    ngram: int
    containment: float
    vocabulary: dict[str, int]
    """Evaluation word -> id >= 1; 0 stands for any other word."""
    hashes: np.ndarray
    """Sorted distinct n-gram hashes (uint64) over all evaluation documents."""
    starts: np.ndarray
    """CSR: the documents holding hashes[i] are postings[starts[i]:starts[i + 1]]."""
    postings: np.ndarray
    needed: np.ndarray
    """Per evaluation document: how many of its distinct n-grams a pretraining document must hold."""
    document_source: np.ndarray
    """Per evaluation document: its source's index."""
    short_lengths: tuple[int, ...]
    """Word counts below `ngram` of evaluation documents that count as one n-gram of all their words."""
    patients: dict[str, int]
    """Patient id -> index of the first source holding the patient."""
    source_hashes: list[np.ndarray]
    """Per source: indices into `hashes` of its n-grams (for raw coverage)."""
    bitmap: np.ndarray
    """A bit per value of a hash's top BITMAP_BITS bits, set where some evaluation n-gram has them: most windows of
    a pretraining document are ruled out here, and only the rest are searched in `hashes`."""

    @classmethod
    def build(cls, rule: ExcludeConfig, sources: Sequence[EvaluationSource]) -> EvaluationIndex:
        """One pass over all evaluation words: ids, every window's hash, (hash, document) pairs sorted once."""
        vocabulary: dict[str, int] = {}
        pieces: list[np.ndarray] = []  # each document's ids, then a 0: no window spans two documents
        document_source: list[int] = []
        for index, source in enumerate(sources):
            for text in source.texts:
                found = words(text)
                if not found:
                    continue
                for new in set(found).difference(vocabulary):
                    vocabulary[new] = len(vocabulary) + 1
                pieces += [np.fromiter(map(vocabulary.__getitem__, found), dtype=np.uint64, count=len(found)),
                           np.zeros(1, np.uint64)]
                document_source.append(index)
        ids = np.concatenate(pieces) if pieces else np.zeros(0, np.uint64)
        sizes = np.array([piece.size + 1 for piece in pieces[::2]], dtype=np.int64)
        del pieces
        first = np.cumsum(sizes) - sizes
        window_hashes, at = _known_ngrams(ids, rule.ngram)
        owner = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)[at]
        short = np.flatnonzero(sizes - 1 < rule.ngram)  # shorter than n words: one n-gram of all its words
        window_hashes = np.concatenate([window_hashes, *(ngram_hashes(ids[first[d]: first[d] + sizes[d] - 1],
                                                                      int(sizes[d] - 1)) for d in short)])
        owner = np.concatenate([owner, short])
        order = np.lexsort((owner, window_hashes))
        flat, owner = window_hashes[order], owner[order]
        distinct = np.ones(flat.size, dtype=bool)
        distinct[1:] = (flat[1:] != flat[:-1]) | (owner[1:] != owner[:-1])
        flat, owner = flat[distinct], owner[distinct]
        hashes, starts = np.unique(flat, return_index=True)
        counts = np.bincount(owner, minlength=sizes.size)
        needed = np.maximum(1, np.ceil(rule.containment * counts - 1e-9)).astype(np.int64)
        document_source = np.array(document_source, dtype=np.int32)
        hash_index = np.repeat(np.arange(hashes.size), np.diff(np.append(starts, flat.size)))
        source_hashes = [np.unique(hash_index[document_source[owner] == s]) for s in range(len(sources))]
        patients: dict[str, int] = {}
        for index, source in enumerate(sources):
            for patient in sorted(source.patients):
                patients.setdefault(patient, index)
        return cls(rule.ngram, rule.containment, vocabulary, hashes, np.append(starts, flat.size).astype(np.int64),
                   owner.astype(np.int32), needed, document_source,
                   tuple(sorted({int(sizes[d] - 1) for d in short})), patients, source_hashes, _bitmap(hashes))

    def documents_of(self, source: int) -> int:
        return int((self.document_source == source).sum())


def _bitmap(hashes: np.ndarray) -> np.ndarray:
    top = hashes >> np.uint64(64 - BITMAP_BITS)
    bits = np.zeros(1 << (BITMAP_BITS - 3), dtype=np.uint8)
    np.bitwise_or.at(bits, top >> np.uint64(3), np.left_shift(1, top & np.uint64(7)).astype(np.uint8))
    return bits


def _maybe_known(bitmap: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """False where no evaluation n-gram can equal the hash (its top bits are unset in the bitmap)."""
    top = hashes >> np.uint64(64 - BITMAP_BITS)
    return ((bitmap[top >> np.uint64(3)] >> (top & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """The polynomial hash of every window of `n` ids (uint64, wrapping), mixed so that nearby windows spread."""
    count = ids.size - n + 1
    if count <= 0:
        return np.empty(0, np.uint64)
    with np.errstate(over="ignore"):
        h = np.zeros(count, dtype=np.uint64)
        for k in range(n):
            h = h * _PRIME + ids[k: k + count]
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    return h


# ----------------------------------------------------------------------------- the pretraining side


@dataclasses.dataclass
class BatchMatch:
    """What one batch of pretraining documents matched."""

    source: np.ndarray
    """Per document: the index of the evaluation source that drops it, or KEPT."""
    covered: np.ndarray
    """Indices into the index's hashes that occur in the batch (dropped documents included): raw coverage."""


def match_batch(index: EvaluationIndex, texts: Sequence[str],
                patients: Sequence[tuple[str, ...]] | None) -> BatchMatch:
    """Apply the rule to a batch of documents: a record naming an evaluation patient (in any of its `by` fields)
    first, then the evaluation document of which a pretraining document holds the largest share (at least
    `containment`)."""
    source = np.full(len(texts), KEPT, dtype=np.int32)
    if patients is not None and index.patients:
        source[:] = [next((index.patients[v] for v in values if v in index.patients), KEPT) for values in patients]
    stream: list[str] = []
    sizes = np.empty(len(texts), dtype=np.int64)
    for d, text in enumerate(texts):
        found = words(text)
        stream.extend(found)
        stream.append("")  # id 0: no n-gram spans two documents
        sizes[d] = len(found) + 1
    ids = np.fromiter(map(index.vocabulary.get, stream, itertools.repeat(0)), dtype=np.uint64, count=len(stream))
    doc_at = np.repeat(np.arange(len(texts), dtype=np.int64), sizes)
    hits, docs = [], []
    for n in (index.ngram, *index.short_lengths):
        hashes, at = _known_ngrams(ids, n)
        if hashes.size == 0 or index.hashes.size == 0:
            continue
        maybe = _maybe_known(index.bitmap, hashes)
        hashes, at = hashes[maybe], at[maybe]
        where = np.minimum(np.searchsorted(index.hashes, hashes), index.hashes.size - 1)
        known = index.hashes[where] == hashes
        hits.append(where[known])
        docs.append(doc_at[at[known]])
    if not hits or not sum(h.size for h in hits):
        return BatchMatch(source, np.empty(0, np.int64))
    width = np.int64(index.hashes.size)
    pairs = np.unique(np.concatenate(docs) * width + np.concatenate(hits))  # distinct n-grams per document
    doc, hit = pairs // width, pairs % width
    lengths = index.starts[hit + 1] - index.starts[hit]
    offsets = np.repeat(index.starts[hit] - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
    evaluation = index.postings[offsets].astype(np.int64)
    owner = np.repeat(doc, lengths)
    documents = np.int64(index.needed.size)
    held, counts = np.unique(owner * documents + evaluation, return_counts=True)
    held_doc, held_eval = held // documents, held % documents
    share = counts / index.needed[held_eval]
    enough = share >= 1.0
    order = np.lexsort((-share[enough], held_doc[enough]))  # per document, its largest share first
    winners_doc, winners_eval = held_doc[enough][order], held_eval[enough][order]
    first = np.unique(winners_doc, return_index=True)[1]
    for d, e in zip(winners_doc[first].tolist(), winners_eval[first].tolist()):
        if source[d] == KEPT:
            source[d] = index.document_source[e]
    return BatchMatch(source, np.unique(hit))


def _known_ngrams(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and start positions of the windows of `n` ids holding no id 0 (a word no evaluation document has,
    or a document boundary): only those can be evaluation n-grams."""
    if ids.size < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    unknown = np.concatenate([[0], np.cumsum(ids == 0)])
    clean = np.flatnonzero(unknown[n:] - unknown[:-n] == 0)
    return ngram_hashes(ids, n)[clean], clean


# ----------------------------------------------------------------------------- what a prepare records


class ExclusionTally:
    """Documents and tokens dropped per corpus and source, and each corpus's raw coverage of each source."""

    def __init__(self, index: EvaluationIndex, sources: Sequence[EvaluationSource], rule: ExcludeConfig):
        self.index, self.sources, self.rule = index, sources, rule
        self.dropped: dict[str, dict[str, dict[str, int]]] = {}
        self.coverage: dict[str, dict[str, float]] = {}
        self._covered = np.zeros(index.hashes.size, dtype=bool)

    def matcher(self) -> EvaluationIndex:
        """The index as each tokenizer worker needs it: without what only this tally reads (raw coverage)."""
        return dataclasses.replace(self.index, source_hashes=[])

    def add(self, corpus: str, match: BatchMatch, lengths: np.ndarray) -> None:
        self._covered[match.covered] = True
        counts = self.dropped.setdefault(corpus, {})
        for s in np.unique(match.source[match.source != KEPT]).tolist():
            mine = match.source == s
            entry = counts.setdefault(self.sources[s].name, {"documents": 0, "tokens": 0})
            entry["documents"] += int(mine.sum())
            entry["tokens"] += int(lengths[mine].sum())

    def end_corpus(self, corpus: str) -> None:
        """Close a corpus: its raw coverage of every source, then a clean slate for the next corpus."""
        self.dropped.setdefault(corpus, {})
        self.coverage[corpus] = {
            s.name: round(float(self._covered[hashes].mean()), 6) if hashes.size else 0.0
            for s, hashes in zip(self.sources, self.index.source_hashes)}
        self._covered[:] = False

    def summary(self, corpus: str) -> str:
        """One line for `medtrain prepare`: what the corpus lost, per source (names and counts, never text)."""
        dropped = self.dropped.get(corpus, {})
        if not dropped:
            return f"{corpus}: exclude dropped nothing"
        total = sum(d["documents"] for d in dropped.values())
        parts = ", ".join(f"{name} {d['documents']} ({d['tokens']} tokens)" for name, d in dropped.items())
        return f"{corpus}: exclude dropped {total} documents: {parts}"

    def identity(self) -> dict[str, Any] | None:
        return exclusion_identity(self.manifest_entry())

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "rule": {"ngram": self.rule.ngram, "containment": self.rule.containment, "by": list(self.rule.by)},
            "sources": [{"name": s.name, "path": str(s.path), "format": s.format, "sha256": s.sha256,
                         "documents": self.index.documents_of(i), "ngrams": int(self.index.source_hashes[i].size),
                         "patients": len(s.patients)} for i, s in enumerate(self.sources)],
            "dropped": self.dropped,
            "raw_coverage": self.coverage,
        }
