"""BRAT standoff: a folder of `<name>.txt` + `<name>.ann`, read in name order; and BRAT output.

A .txt without .ann is unannotated. Only entity lines (`T..`) are read; relations, events, attributes,
normalizations (`N`) and notes (`#`) are ignored. Sentences are the lines of the .txt; words are TOKEN_PATTERN
matches (runs of word characters or single other characters) with their character offsets.

Annotation slips. Real releases have entity lines whose text is not at their offsets in the .txt (PharmaCoNER
2019: five, in one document, starting one or two characters late). An entity line whose third field (its text)
differs from the .txt at its offsets, whitespace-insensitively, is a mismatch; a line without that field cannot
be checked and is kept as written. `BratFormat.offset_mismatch` says what happens to a mismatch:

    repair  every fragment is moved by the same shift d, 1 <= |d| <= repair_window, staying inside the .txt, to
            the nearest place where the text is (at equal distance the earlier one, d < 0); none: skipped
    skip    dropped
    error   a UserError at its file:line (what a corpus without slips expects)

`as_written` (test gold) repairs and drops nothing: every entity keeps the offsets its .ann gives, as the shared
tasks' scorers read them (they never look at the .txt); mismatches are only counted. The counts go to `NerCorpus`
(`repaired`, `skipped_annotations`, `as_written`), and each affected .ann gets one warning line naming its first
affected line and what was done, never the text. An offset beyond the .txt, an empty or reversed fragment and a
malformed line stay errors in every mode: the line is broken, not slipped. The IOB2 tags follow the entities kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from medtrain.data.ner.entities import (
    Entity, NerCorpus, NerDocument, Sentence, decoded_lines, sentence_tags, synthetic_text, type_rank, words_by_line,
)
from medtrain.data.ner_format import BratFormat
from medtrain.errors import UserError
from medtrain.io import write_text_atomic

log = logging.getLogger(__name__)

_OFFSETS = re.compile(r"(\d+) (\d+)")


@dataclass
class _Slips:
    """What one .ann file's mismatched annotations became, and the line of the first one, for its warning."""

    first_line: int = 0
    repaired: int = 0
    skipped: int = 0
    as_written: int = 0


def read_brat(folder: Path, brat: BratFormat, as_written: bool = False) -> NerCorpus:
    """Every .txt in name order with its .ann entities; an .ann without its .txt is an error.

    Mismatched annotations follow `brat.offset_mismatch`, or are kept as written under `as_written` (module
    docstring); the corpus counts them.
    """
    if not folder.is_dir():
        raise UserError("BRAT folder not found", folder)
    texts = {p.stem: p for p in folder.glob("*.txt")}
    for ann in sorted(folder.glob("*.ann")):
        if ann.stem not in texts:
            raise UserError(f"no {ann.stem}.txt beside this .ann file", ann)
    if not texts:
        raise UserError("no .txt files in this BRAT folder", folder)
    corpus = NerCorpus([])
    for name in sorted(texts):
        doc, slips = _read_brat_document(texts[name], brat, as_written)
        corpus.documents.append(doc)
        corpus.repaired += slips.repaired
        corpus.skipped_annotations += slips.skipped
        corpus.as_written += slips.as_written
    return corpus


def _read_brat_document(txt: Path, brat: BratFormat, as_written: bool) -> tuple[NerDocument, _Slips]:
    try:
        with open(txt, encoding="utf-8", newline="") as f:  # newline="": offsets count "\r" too
            text = f.read()
    except UnicodeDecodeError:
        raise UserError("not valid UTF-8", txt) from None
    ann = txt.with_suffix(".ann")
    entities, slips = _read_ann(ann, text, brat, as_written) if ann.is_file() else ([], _Slips())
    lines = words_by_line(text)
    sentences = [Sentence(txt.stem, words, tags) for words, tags in zip(lines, sentence_tags(lines, entities))]
    return NerDocument(txt.stem, text, sentences, entities), slips


def _read_ann(path: Path, text: str, brat: BratFormat, as_written: bool) -> tuple[list[Entity], _Slips]:
    """Entity (`T`) lines, mismatches settled by the policy; every other kind of line (R, E, A, N, #) is ignored."""
    entities: list[Entity] = []
    slips = _Slips()
    for lineno, line in enumerate(decoded_lines(path), 1):
        if not line.startswith("T"):
            continue
        entity, surface = _parse_entity(line.rstrip("\r"), text, path, lineno)
        if surface is None or _text_is_at(surface, text, entity.fragments):
            entities.append(entity)
            continue
        slips.first_line = slips.first_line or lineno
        kept = _settle(entity, surface, text, brat, as_written, slips)
        if kept is not None:
            entities.append(kept)
    if slips.first_line:
        _warn(path, slips, brat)
    return entities, slips


def _parse_entity(line: str, text: str, path: Path, lineno: int) -> tuple[Entity, str | None]:
    """`T1<TAB>TYPE 3 9;12 15<TAB>surface` -> the entity as written and its surface (None where the line has none)."""
    fields = line.split("\t", 2)
    entity_type, _, offsets = fields[1].partition(" ") if len(fields) > 1 else ("", "", "")
    if not entity_type or not offsets:
        raise UserError("entity line is not `ID<TAB>TYPE START END[;START END]<TAB>text`", path, lineno)
    fragments = tuple(sorted(_fragment(part, len(text), path, lineno) for part in offsets.split(";")))
    return Entity(entity_type, fragments, (str(path), lineno)), fields[2] if len(fields) > 2 else None


def _fragment(part: str, text_length: int, path: Path, lineno: int) -> tuple[int, int]:
    match = _OFFSETS.fullmatch(part.strip())
    if not match:
        raise UserError("entity offsets are not `START END[;START END]`", path, lineno)
    start, end = int(match.group(1)), int(match.group(2))
    if end > text_length:
        raise UserError(f"entity offset {end} is beyond the end of the .txt ({text_length} characters)", path, lineno)
    if start >= end:
        raise UserError(f"entity fragment {start} {end} is empty or reversed", path, lineno)
    return start, end


def _text_is_at(surface: str, text: str, fragments: tuple[tuple[int, int], ...], shift: int = 0) -> bool:
    """Whether `surface` is the .txt at the fragments moved by `shift`, whitespace-insensitively (fragments joined
    by a space, as BRAT writes them); the exact comparison first, so a matching line costs one slice."""
    found = " ".join(text[s + shift:e + shift] for s, e in fragments)
    return surface == found or surface.split() == found.split()


def _settle(entity: Entity, surface: str, text: str, brat: BratFormat, as_written: bool,
            slips: _Slips) -> Entity | None:
    """A mismatched entity kept as written, repaired or dropped (None), counted in `slips`; or the error."""
    if as_written:
        slips.as_written += 1
        return entity
    if brat.offset_mismatch == "error":
        raise UserError("entity text does not match the .txt at its offsets (wrong offsets or .txt? "
                        "offset_mismatch: repair or skip reads past it)", *(entity.source or ()))
    shift = _nearest_shift(surface, text, entity.fragments, brat.repair_window) \
        if brat.offset_mismatch == "repair" else None
    if shift is None:
        slips.skipped += 1
        return None
    slips.repaired += 1
    return replace(entity, fragments=tuple((s + shift, e + shift) for s, e in entity.fragments))


def _nearest_shift(surface: str, text: str, fragments: tuple[tuple[int, int], ...], window: int) -> int | None:
    """The shift of smallest size within `window` that puts `surface` at the fragments, the earlier place (negative
    shift) first at equal size; None when no shift inside the .txt does."""
    lowest, highest = -fragments[0][0], len(text) - max(e for _, e in fragments)  # sorted by start, not by end
    for size in range(1, window + 1):
        for shift in (-size, size):
            if lowest <= shift <= highest and _text_is_at(surface, text, fragments, shift):
                return shift
    return None


def _warn(path: Path, slips: _Slips, brat: BratFormat) -> None:
    """One line per .ann file: where the first slip is and what was done; counts and policy only, never text."""
    if slips.as_written:
        done = f"kept {slips.as_written} at their offsets as written (test gold, scored as the shared task scores)"
    elif brat.offset_mismatch == "repair":
        done = (f"repaired {slips.repaired} (moved to the nearest place within {brat.repair_window} characters "
                f"where their text is), skipped {slips.skipped} (not found there)")
    else:
        done = f"skipped {slips.skipped} (offset_mismatch: skip)"
    total = slips.repaired + slips.skipped + slips.as_written
    log.warning("%s:%d: %d entity annotation(s) whose text is not at their offsets in the .txt, the first at this "
                "line: %s", path, slips.first_line, total, done)


def write_brat(doc: NerDocument, entities: Iterable[Entity], path: str | Path) -> None:
    """Write `path` (.ann) and the .txt beside it, atomically, so the folder opens in brat and in read_ner.

    A CoNLL document's .txt is its `synthetic_text`, which its words' offsets point into.
    """
    path = Path(path)
    text = doc.text if doc.text is not None else synthetic_text(doc)
    order = sorted(entities, key=lambda e: (e.start, -e.end, type_rank(e.type), e.fragments))
    lines = []
    for i, entity in enumerate(order, 1):
        offsets = ";".join(f"{s} {e}" for s, e in entity.fragments)
        surface = re.sub(r"[\t\r\n]", " ", " ".join(text[s:e] for s, e in entity.fragments))
        lines.append(f"T{i}\t{entity.type} {offsets}\t{surface}\n")
    write_text_atomic(path.with_suffix(".txt"), text)
    write_text_atomic(path, "".join(lines))

