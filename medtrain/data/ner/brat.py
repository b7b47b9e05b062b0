"""BRAT standoff: a folder of `<name>.txt` + `<name>.ann`, read in name order; and BRAT output.

A .txt without .ann is unannotated. Only entity lines (`T..`) are read; relations, events, attributes,
normalizations (`N`) and notes (`#`) are ignored. Sentences are the lines of the .txt; words are TOKEN_PATTERN
matches (runs of word characters or single other characters) with their character offsets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from medtrain.data.ner.entities import (
    Entity, NerCorpus, NerDocument, Sentence, decoded_lines, sentence_tags, synthetic_text, type_rank, words_by_line,
)
from medtrain.data.ner_format import BratFormat
from medtrain.errors import UserError
from medtrain.io import write_text_atomic

_OFFSETS = re.compile(r"(\d+) (\d+)")


def read_brat(folder: Path, brat: BratFormat, as_written: bool = False) -> NerCorpus:
    """Every .txt in name order with its .ann entities; an .ann without its .txt is an error."""
    if not folder.is_dir():
        raise UserError("BRAT folder not found", folder)
    texts = {p.stem: p for p in folder.glob("*.txt")}
    for ann in sorted(folder.glob("*.ann")):
        if ann.stem not in texts:
            raise UserError(f"no {ann.stem}.txt beside this .ann file", ann)
    if not texts:
        raise UserError("no .txt files in this BRAT folder", folder)
    return NerCorpus([_read_brat_document(texts[name]) for name in sorted(texts)])


def _read_brat_document(txt: Path) -> NerDocument:
    try:
        with open(txt, encoding="utf-8", newline="") as f:  # newline="": offsets count "\r" too
            text = f.read()
    except UnicodeDecodeError:
        raise UserError("not valid UTF-8", txt) from None
    ann = txt.with_suffix(".ann")
    entities = _read_ann(ann, text) if ann.is_file() else []
    lines = words_by_line(text)
    sentences = [Sentence(txt.stem, words, tags) for words, tags in zip(lines, sentence_tags(lines, entities))]
    return NerDocument(txt.stem, text, sentences, entities)


def _read_ann(path: Path, text: str) -> list[Entity]:
    """Entity (`T`) lines; every other kind of annotation line (R, E, A, N, #) is ignored."""
    return [_parse_entity(line.rstrip("\r"), text, path, lineno)
            for lineno, line in enumerate(decoded_lines(path), 1) if line.startswith("T")]


def _parse_entity(line: str, text: str, path: Path, lineno: int) -> Entity:
    """`T1<TAB>TYPE 3 9;12 15<TAB>surface`; the surface must match the .txt (whitespace-insensitive)."""
    fields = line.split("\t", 2)
    entity_type, _, offsets = fields[1].partition(" ") if len(fields) > 1 else ("", "", "")
    if not entity_type or not offsets:
        raise UserError("entity line is not `ID<TAB>TYPE START END[;START END]<TAB>text`", path, lineno)
    fragments = tuple(sorted(_fragment(part, len(text), path, lineno) for part in offsets.split(";")))
    surface = " ".join(text[s:e] for s, e in fragments)
    if len(fields) > 2 and fields[2].split() != surface.split():
        raise UserError("entity text does not match the .txt at its offsets (wrong offsets or .txt?)", path, lineno)
    return Entity(entity_type, fragments, (str(path), lineno))


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

