"""The NER data types every reader returns, and the one policy that turns entities into IOB2 tags and back.

Tags from entities: nested, overlapping and discontinuous entities become IOB2 by the policy of
`medtrain.data.sample.spans` (`flat_spans`): each fragment of a discontinuous entity is a span of its own (so a
later fragment begins with B-); then the longer span wins, at equal length a whole entity beats a fragment, then
the earlier start, then the order of ENTITY_TYPES (other types after these, by name); losers are dropped. A span
that starts or ends inside a word takes the whole word.

IOB2 repair: an I-X that does not continue an X entity becomes B-X (`repair_iob2`). Every entity remembers the
file and line it was read from (not part of its equality) so an error can point at it without quoting text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.data.sample import ENTITY_TYPES, TOKEN_PATTERN
from medtrain.errors import UserError


# ----------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Entity:
    """A typed span: one or more (start, end) character fragments in order, end exclusive.

    `source` is the (file, line) it was read from, for errors that point at it; equality and hash ignore it.
    """

    type: str
    fragments: tuple[tuple[int, int], ...]
    source: tuple[str, int] | None = field(default=None, compare=False, repr=False)

    @property
    def start(self) -> int:
        return self.fragments[0][0]

    @property
    def end(self) -> int:
        return self.fragments[-1][1]


@dataclass(frozen=True, slots=True)
class Word:
    """A word and its character offsets in the document text (synthetic ones for column files)."""

    text: str
    start: int
    end: int


@dataclass
class Sentence:
    """Words and their IOB2 tags (all "O" for unlabeled input)."""

    doc_id: str
    words: list[Word]
    tags: list[str]


@dataclass
class NerDocument:
    """A document: its text, every gold entity (nested and discontinuous ones too) and its tagged sentences.

    The readers always set `text` (synthetic for column files); None is for hand-built documents, whose words'
    offsets then point into `synthetic_text`.
    """

    doc_id: str
    text: str | None
    sentences: list[Sentence]
    entities: list[Entity]


@dataclass
class NerCorpus:
    """The documents read from one path and what reading changed, for a run to report (no text in it)."""

    documents: list[NerDocument]
    skipped_lines: int = 0
    """Column lines with too few columns, skipped under `short_lines: skip`."""
    bare_inside: int = 0
    """I- tags that did not continue an entity: read as B- (`split`) or joined to an earlier entity (`join`)."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Entities per (shared) type dropped because the type is outside `labels.keep`."""
    unmapped: Counter[str] = field(default_factory=Counter)
    """Entities per type that `labels.map[language]` has no entry for, kept under their own name."""
    repaired: int = 0
    """BRAT annotations whose text was not at their offsets but within `repair_window` of them: moved there."""
    skipped_annotations: int = 0
    """BRAT annotations dropped: mismatched under `skip`, or not found within the window under `repair`."""
    as_written: int = 0
    """Mismatched BRAT annotations kept at their written offsets: test gold, scored as the shared task scores."""

    def types(self) -> set[str]:
        """The entity types of the gold entities (after the label map, when one was applied)."""
        return {e.type for doc in self.documents for e in doc.entities}


@dataclass(frozen=True)
class Feature:
    """One model input: a sentence, or one window of a long one.

    `labels` has the word's label id on its first subword and IGNORE_INDEX elsewhere; `word_index` has, for the
    same tokens, the word's index in the sentence and -1 elsewhere; `word_offset` is the first predicted word.
    """

    input_ids: list[int]
    labels: list[int]
    word_index: list[int]
    sentence_index: int
    word_offset: int


# ----------------------------------------------------------------------------- words and the IOB2 policy


def words_by_line(text: str) -> list[list[Word]]:
    """The words of each non-empty line, with their character offsets in `text`."""
    lines = []
    for line in re.finditer(r"[^\n]+", text):
        words = [Word(m.group(), m.start(), m.end()) for m in TOKEN_PATTERN.finditer(text, line.start(), line.end())]
        if words:
            lines.append(words)
    return lines


def type_rank(entity_type: str) -> tuple[int, str]:
    """ENTITY_TYPES order first (as sample.py), then any other type by name."""
    known = ENTITY_TYPES.index(entity_type) if entity_type in ENTITY_TYPES else len(ENTITY_TYPES)
    return known, entity_type


def flat_spans(entities: Iterable[Entity]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, type) spans in order: the nested/discontinuous policy of the module docstring.

    Covered characters are marked in a bytearray, so a document of 100k entities costs its characters, not the
    square of its entities.
    """
    candidates = [(s, e, entity.type, len(entity.fragments) > 1) for entity in entities for s, e in entity.fragments]
    candidates.sort(key=lambda c: (c[0] - c[1], c[3], c[0], type_rank(c[2])))
    covered = bytearray(max((c[1] for c in candidates), default=0))
    kept: list[tuple[int, int, str]] = []
    for start, end, entity_type, _ in candidates:
        if covered.find(1, start, end) < 0:
            covered[start:end] = b"\x01" * (end - start)
            kept.append((start, end, entity_type))
    return sorted(kept)


def sentence_tags(sentences: Sequence[Sequence[Word]], entities: Iterable[Entity]) -> list[list[str]]:
    """IOB2 tags of each sentence's words from the document's entities (flat_spans first)."""
    spans = flat_spans(entities)
    ends = [end for _, end, _ in spans]  # disjoint spans sorted by start: their ends are sorted too
    return [_span_tags(words, spans, bisect_right(ends, words[0].start) if words else 0) for words in sentences]


def _span_tags(words: Sequence[Word], spans: Sequence[tuple[int, int, str]], i: int) -> list[str]:
    """IOB2 tags of one sentence's words, spans from index i on; a word overlapping a span is in it, the first such
    word gets B-."""
    tags, previous = [], -1
    for word in words:
        while i < len(spans) and spans[i][1] <= word.start:
            i += 1
        if i < len(spans) and spans[i][0] < word.end:
            tags.append(f"{'I' if previous == i else 'B'}-{spans[i][2]}")
            previous = i
        else:
            tags.append("O")
            previous = -1
    return tags


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """I-X that does not continue an X entity becomes B-X; everything else is kept."""
    repaired, previous_type = [], ""
    for tag in tags:
        if tag.startswith("I-") and tag[2:] != previous_type:
            tag = f"B-{tag[2:]}"
        repaired.append(tag)
        previous_type = tag[2:]
    return repaired



def decoded_lines(path: Path) -> list[str]:
    """The file's lines (split at "\n", so a "\r" stays), decoded at once; a bad byte is reported at its own line;
    a BOM is dropped."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError("not valid UTF-8", path, raw.count(b"\n", 0, exc.start) + 1) from None
    return text.removeprefix("\ufeff").split("\n")


def synthetic_text(doc: NerDocument) -> str:
    """The text a column document's synthetic offsets point into (its `text`, when a reader made it)."""
    return "".join(" ".join(w.text for w in s.words) + "\n" for s in doc.sentences)



# ----------------------------------------------------------------------------- entities from tags


def tags_to_entities(sentence: Sentence, tags: Sequence[str]) -> list[Entity]:
    """Contiguous entities from IOB2 tags (repaired first), offsets from the sentence's words."""
    runs: list[tuple[str, int, int]] = []  # (type, start, end)
    for word, tag in zip(sentence.words, repair_iob2(tags)):
        if tag.startswith("I-"):  # after repair, an I- always continues the last run
            runs[-1] = (runs[-1][0], runs[-1][1], word.end)
        elif tag.startswith("B-"):
            runs.append((tag[2:], word.start, word.end))
    return [Entity(t, ((start, end),)) for t, start, end in runs]

