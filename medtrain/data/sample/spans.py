"""Text with standoff entity spans, and the two files it is written as: BRAT standoff and IOB2 CoNLL.

Phrases carry their entities' character offsets, so sentences and documents compose by concatenation and
every annotation stays exact. CoNLL policy for nested and discontinuous BRAT entities (the one rule every
.conll file follows):
    1. a discontinuous entity becomes one contiguous entity per fragment, each with the entity's type;
    2. overlaps are resolved greedily: the longer span wins; at equal length a whole entity beats a
       fragment, then the earlier start wins, then the order of ENTITY_TYPES; a losing span is dropped.
    So "carcinoom van de long en de lever" (DISEASE "carcinoom van de long", DISEASE "carcinoom van de
    ... lever", ANATOMY "long", ANATOMY "lever") becomes DISEASE "carcinoom van de long" + ANATOMY "lever".
CoNLL tokens are runs of word characters or single other characters (TOKEN_PATTERN) within one line of the
.txt, so each maps back to its character offsets; every entity starts and ends on a token boundary.
Each document opens with a `-DOCSTART-<TAB>O` line; sentences are separated by blank lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

ENTITY_TYPES = ("DISEASE", "DRUG", "PROCEDURE", "SYMPTOM", "ANATOMY")
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Entity:
    """A BRAT entity: a type and one or more (start, end) character fragments, end exclusive."""

    label: str
    fragments: tuple[tuple[int, int], ...]

    def shifted(self, by: int) -> Entity:
        return Entity(self.label, tuple((s + by, e + by) for s, e in self.fragments))


@dataclass(frozen=True)
class Phrase:
    """Text and the entities in it, offsets relative to the text, so phrases compose by concatenation."""

    text: str
    entities: tuple[Entity, ...] = ()


def join(parts: Sequence[Phrase], sep: str = "") -> Phrase:
    """Concatenate phrases, moving each one's entities to where its text lands."""
    texts, entities, offset = [], [], 0
    for i, part in enumerate(parts):
        if i:
            texts.append(sep)
            offset += len(sep)
        texts.append(part.text)
        if part.entities:
            entities.extend(entity.shifted(offset) for entity in part.entities)
        offset += len(part.text)
    return Phrase("".join(texts), tuple(entities))


def brat(doc: Phrase) -> str:
    """The .ann file: `T<n>\\tTYPE start end[;start end]\\ttext`, fragments' texts joined by a space."""
    order = sorted(doc.entities, key=lambda e: (e.fragments[0][0], -e.fragments[-1][1], ENTITY_TYPES.index(e.label)))
    lines = []
    for i, entity in enumerate(order, 1):
        offsets = ";".join(f"{s} {e}" for s, e in entity.fragments)
        surface = " ".join(doc.text[s:e] for s, e in entity.fragments)
        lines.append(f"T{i}\t{entity.label} {offsets}\t{surface}\n")
    return "".join(lines)


def _conll_spans(entities: Sequence[Entity]) -> list[tuple[int, int, str]]:
    """Flat, non-overlapping (start, end, type) spans under the CoNLL policy of the module docstring."""
    candidates = [(s, e, entity.label, len(entity.fragments) > 1) for entity in entities for s, e in entity.fragments]
    candidates.sort(key=lambda c: (c[0] - c[1], c[3], c[0], ENTITY_TYPES.index(c[2])))
    kept: list[tuple[int, int, str]] = []
    for start, end, label, _ in candidates:
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, label))
    return sorted(kept)


def conll(doc: Phrase) -> str:
    """One document in IOB2: `-DOCSTART-`, then token<TAB>tag lines, a blank line after each sentence."""
    owner: dict[int, tuple[int, str]] = {}
    for start, end, label in _conll_spans(doc.entities):
        owner.update((i, (start, label)) for i in range(start, end))
    out = ["-DOCSTART-\tO\n\n"]
    for line in re.finditer(r"[^\n]+", doc.text):
        for token in TOKEN_PATTERN.finditer(doc.text, line.start(), line.end()):
            start, label = owner.get(token.start(), (None, None))
            tag = "O" if label is None else f"{'B' if start == token.start() else 'I'}-{label}"
            out.append(f"{token.group()}\t{tag}\n")
        out.append("\n")
    return "".join(out)
