"""Text with standoff entity spans, and the two files it is written as: BRAT standoff and IOB2 CoNLL.

Phrases carry their entities' character offsets, so sentences and documents compose by concatenation and
every annotation stays exact. Entities carry the generator's latent types (ENTITY_TYPES); a file writes each
under its corpus's own name (`TypeName`, see shapes.py), after every ordering and overlap decision is made on
the latent types, so the same document gives the same spans in every language's shape.
CoNLL policy for nested and discontinuous BRAT entities (the one rule every .conll file follows):
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

ENTITY_TYPES = ("DISEASE", "DRUG", "PROCEDURE", "SYMPTOM", "ANATOMY")
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

TypeName = Callable[[str, str], str]
"""(latent type, the entity's text) -> the type a file writes; the text lets a type depend on the term."""


def latent_type(label: str, text: str) -> str:
    """Write the generator's own type."""
    return label


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


def surface(doc: Phrase, entity: Entity) -> str:
    """An entity's text as BRAT writes it: its fragments' texts joined by a space."""
    return " ".join(doc.text[s:e] for s, e in entity.fragments)


def brat_order(doc: Phrase) -> list[Entity]:
    """Entities in .ann order (T1, T2, ...): by start, the longer first, then by ENTITY_TYPES."""
    return sorted(doc.entities, key=lambda e: (e.fragments[0][0], -e.fragments[-1][1], ENTITY_TYPES.index(e.label)))


def brat_line(doc: Phrase, number: int, entity: Entity, type_name: TypeName) -> str:
    """`T<n>\\tTYPE start end[;start end]\\ttext`."""
    offsets = ";".join(f"{s} {e}" for s, e in entity.fragments)
    text = surface(doc, entity)
    return f"T{number}\t{type_name(entity.label, text)} {offsets}\t{text}\n"


def brat(doc: Phrase, type_name: TypeName = latent_type) -> str:
    """The .ann file: one T line per entity."""
    return "".join(brat_line(doc, i, entity, type_name) for i, entity in enumerate(brat_order(doc), 1))


def _conll_spans(entities: Sequence[Entity]) -> list[tuple[int, int, str]]:
    """Flat, non-overlapping (start, end, type) spans under the CoNLL policy of the module docstring."""
    candidates = [(s, e, entity.label, len(entity.fragments) > 1) for entity in entities for s, e in entity.fragments]
    candidates.sort(key=lambda c: (c[0] - c[1], c[3], c[0], ENTITY_TYPES.index(c[2])))
    kept: list[tuple[int, int, str]] = []
    for start, end, label, _ in candidates:
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, label))
    return sorted(kept)


def sentence_tokens(text: str) -> Iterator[list[re.Match[str]]]:
    """The tokens of each non-empty line (one sentence per line), as matches carrying their offsets."""
    for line in re.finditer(r"[^\n]+", text):
        yield list(TOKEN_PATTERN.finditer(text, line.start(), line.end()))


def conll(doc: Phrase, type_name: TypeName = latent_type) -> str:
    """One document in IOB2: `-DOCSTART-`, then token<TAB>tag lines, a blank line after each sentence."""
    owner: dict[int, tuple[int, str]] = {}
    for start, end, label in _conll_spans(doc.entities):
        owner.update((i, (start, type_name(label, doc.text[start:end]))) for i in range(start, end))
    out = ["-DOCSTART-\tO\n\n"]
    for tokens in sentence_tokens(doc.text):
        for token in tokens:
            start, label = owner.get(token.start(), (None, None))
            tag = "O" if label is None else f"{'B' if start == token.start() else 'I'}-{label}"
            out.append(f"{token.group()}\t{tag}\n")
        out.append("\n")
    return "".join(out)
