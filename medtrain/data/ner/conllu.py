"""CoNLL-U files (Universal Dependencies): the token in FORM, its tag in MISC (`misc:KEY`) or in a named field.

MoNERo is published this way (UD_Romanian-SiMoNERo, `BioNERLabel=B-DISO` in MISC). Lines are cut into blocks
at blank lines and into 10 fields at tabs here, with line numbers for errors; IDs, MISC and comments are parsed
by the `conllu` package's own parsers. `conllu.parse_incr` itself took 9 s for benchmarks/ner_data.py's 1M
tokens even with FEATS, HEAD and DEPS left unparsed (18 s with them), most of it per-line bookkeeping: the whole
read must stay under 10 s, and takes 5 s this way.

Words are the lines whose ID is a number; a multiword token's range (`3-4`) and an empty node (`3.1`) are not
words. Offsets point into the corpus's own text: a sentence's text is its `# text` line, where each word (or
multiword token) must follow the previous one after nothing but whitespace, and only whitespace may follow the
last. Where a sentence has no `# text`, or its FORMs are not in it that way (a slip of the file: counted, one
warning per file, its tags still read), its text is rebuilt from FORM and SpaceAfter=No.
A multiword token's surface is the range's FORM; its words share that surface in order, each a piece in
proportion to the length of its FORM and at least one character (all of the surface where it is shorter than
the words are many), so entities on them lie within it; where the FORMs spell the surface (`S-a` = `S`, `-`,
`a`), each word gets its own characters. A document's text is its sentences' texts, each followed by "\n"; a
document starts at `# newdoc`, and a file without one is one document.
Entities come from the tags as in column files (`columns.sentence_entities`, `discontinuous: join|split`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conllu.exceptions import ParseException
from conllu.parser import parse_comment_line, parse_dict_value, parse_id_value

from medtrain.data.ner.columns import TAG, read_files, sentence_entities
from medtrain.data.ner.entities import NerCorpus, NerDocument, Sentence, Word, decoded_lines, sentence_tags
from medtrain.data.ner_format import CONLLU_FIELDS, ColumnFormat, conllu_tag_place
from medtrain.errors import UserError
from medtrain.io import atomic_open

log = logging.getLogger(__name__)

_FORM, _MISC = CONLLU_FIELDS.index("form"), CONLLU_FIELDS.index("misc")
_SPACES = re.compile(r"\s*")
_Token = tuple[int, int | tuple[int, str, int], list[str]]  # line, ID as conllu reads it, the 10 fields


@dataclass
class _Block:
    """Lines between blank lines (a sentence, or comments only): its comments' metadata and its token lines."""

    metadata: dict[str, str | None] = field(default_factory=dict)
    tokens: list[_Token] = field(default_factory=list)

    def word_lines(self) -> list[int]:
        return [lineno for lineno, ident, _ in self.tokens if type(ident) is int]


@dataclass
class _Words:
    """One sentence as read: its `# text`, its words' FORMs, tags and lines, and its surface units (a word, or a
    multiword token's range) as [surface, space after, number of words]."""

    text: str | None
    forms: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    units: list[list] = field(default_factory=list)


def read_conllu(path: Path, columns: ColumnFormat) -> NerCorpus:
    """Every CoNLL-U file (one, or a folder's in name order) into documents; counts logged and returned."""
    reader = _ConlluReader(columns, path)
    documents = read_files(path, "CoNLL-U", reader.read)
    return NerCorpus(documents, reader.skipped, reader.bare_inside)


def write_conllu_predictions(source: Path, columns: ColumnFormat, tags: Sequence[Sequence[str]], out: Path) -> None:
    """A copy of `source` with each word's predicted tag in the tag's place; every other byte as it was.

    `tags`: one list per sentence, in the order `read_conllu` returns them, one tag per word. Under `misc:KEY`, O
    removes the key (MISC `_` when nothing is left) and another tag replaces its value where it is, or is appended
    as KEY=TAG; a field gets the tag itself (O too).
    """
    place, key = _tag_place(columns, source)
    lines = _Lines(source, columns)
    sentences = [words for words in (block.word_lines() for block in lines.blocks()) if words]
    if len(tags) != len(sentences):
        raise ValueError(f"{len(tags)} tag lists for the {len(sentences)} sentences of {source}")
    text = lines.lines
    for index, (block, predicted) in enumerate(zip(sentences, tags)):
        if len(predicted) != len(block):
            raise ValueError(f"sentence {index} of {source}: {len(predicted)} tags for {len(block)} words")
        for lineno, tag in zip(block, predicted):
            if not TAG.fullmatch(tag) or "|" in tag:
                raise ValueError(f"sentence {index} of {source}: a tag is not IOB2 (O, B-TYPE or I-TYPE)")
            text[lineno - 1] = _retagged(text[lineno - 1], place, key, tag)
    with source.open("rb") as f:
        bom = "\ufeff" if f.read(3) == b"\xef\xbb\xbf" else ""  # decoded_lines dropped it
    with atomic_open(out, "w", encoding="utf-8", newline="") as f:  # newline="": a "\r" stays as it was
        f.write(bom + "\n".join(text))


def _tag_place(columns: ColumnFormat, path: Path) -> tuple[int, str | None]:
    """The tag's field index and MISC key (None: the field itself); a column index is a user's slip."""
    if not isinstance(columns.tag, str):
        raise UserError("CoNLL-U needs columns.tag: misc:KEY (a key inside MISC, e.g. misc:BioNERLabel) or a field "
                        "name such as xpos; a column index is for column (conll) files", path)
    place, key = conllu_tag_place(columns.tag)
    return CONLLU_FIELDS.index(place), key


class _Lines:
    """A CoNLL-U file's lines and its blocks, counting token lines without 10 fields skipped (`short_lines`).

    A line is blank, a comment or a token line once stripped, as `conllu.parse_incr` decides; fields are split at
    tabs only (UD allows spaces inside FORM, which conllu's split at two spaces would shift).
    """

    def __init__(self, path: Path, columns: ColumnFormat):
        self.path = path
        self.lines = decoded_lines(path)
        self.skip = columns.short_lines == "skip"
        self.skipped = 0

    def blocks(self) -> Iterator[_Block]:
        """Blocks in order. With `_ConlluReader._sentence`, the reader's hot path (benchmarks/ner_data.py)."""
        block = None
        for lineno, line in enumerate(self.lines, 1):
            stripped = line.strip()
            if not stripped:
                if block is not None:
                    yield block
                block = None
                continue
            if block is None:
                block = _Block()
            if stripped[0] == "#":
                self._comment(stripped, lineno, block.metadata)
            else:
                token = self._token(stripped, lineno)
                if token is not None:
                    block.tokens.append(token)
        if block is not None:
            yield block

    def _token(self, stripped: str, lineno: int) -> _Token | None:
        fields = stripped.split("\t")
        if len(fields) != 10:
            if self.skip:
                self.skipped += 1
                return None
            raise UserError(f"a CoNLL-U token line needs 10 tab-separated fields, found {len(fields)}", self.path,
                            lineno)
        try:
            ident = parse_id_value(fields[0])
        except ParseException:
            ident = None
        if ident is None:
            raise UserError("ID is not a word number (3), a multiword range (3-4) or an empty node (3.1)", self.path,
                            lineno)
        return lineno, ident, fields

    def _comment(self, stripped: str, lineno: int, metadata: dict[str, str | None]) -> None:
        """`# key = value` pairs (conllu's reading: `# newdoc` keeps its key without a value)."""
        for key, value in parse_comment_line(stripped):
            if key == "global.columns" and [c.lower() for c in (value or "").split()] != list(CONLLU_FIELDS):
                raise UserError("CoNLL-U Plus columns other than the ten of CoNLL-U are not supported", self.path,
                                lineno)
            metadata[key] = value


def _retagged(line: str, place: int, key: str | None, tag: str) -> str:
    """The line with the tag in its field (or MISC key); whitespace around the line kept."""
    body = line.strip()
    start = line.index(body)
    fields = body.split("\t")
    fields[place] = _misc_with(fields[place], key, tag) if key else tag
    return line[:start] + "\t".join(fields) + line[start + len(body):]


def _misc_with(misc: str, key: str, tag: str) -> str:
    """MISC with KEY=tag where the key was (its last place, the one conllu reads), appended where absent, and
    without the key for O."""
    parts = [] if misc == "_" else misc.split("|")
    at = next((i for i in range(len(parts) - 1, -1, -1) if parts[i].partition("=")[0] == key), None)
    if at is None and tag != "O":
        parts.append(f"{key}={tag}")
    elif at is not None and tag == "O":
        del parts[at]
    elif at is not None:
        parts[at] = f"{key}={tag}"
    return "|".join(parts) or "_"


class _ConlluReader:
    """Reads CoNLL-U files under one ColumnFormat, counting skipped lines and bare I- tags over all of them."""

    def __init__(self, columns: ColumnFormat, path: Path):
        self.columns = columns
        self.place, self.key = _tag_place(columns, path)
        self.skipped = 0
        self.bare_inside = 0
        self.mismatched = 0  # of the file being read: sentences whose `# text` does not hold their FORMs
        self.first_mismatch = 0

    def read(self, path: Path) -> list[NerDocument]:
        """Documents at `# newdoc` (ids `<stem>-NNNN`), or the whole file as one (id `<stem>`); the file's
        counts logged."""
        lines = _Lines(path, self.columns)
        groups: list[list[_Words]] = [[]]
        newdoc = False
        for block in lines.blocks():
            if any(k == "newdoc" or k.startswith("newdoc ") for k in block.metadata):
                groups.append([])
                newdoc = True
            sentence = self._sentence(block, path)
            if sentence.forms:
                groups[-1].append(sentence)
        groups = [group for group in groups if group]
        bare, self.mismatched, self.first_mismatch = self.bare_inside, 0, 0
        if newdoc:
            documents = [self._document(f"{path.stem}-{i:04d}", g, path) for i, g in enumerate(groups)]
        else:
            documents = [self._document(path.stem, g, path) for g in groups]
        self._log(path, lines.skipped, self.bare_inside - bare)
        self.skipped += lines.skipped
        return documents

    def _sentence(self, block: _Block, path: Path) -> _Words:
        """Words (number IDs) and their tags, grouped into surface units: a range opens a unit that its words
        join; empty nodes are left out."""
        place, key, is_tag = self.place, self.key, TAG.fullmatch
        words = _Words(block.metadata.get("text"))
        units, range_end = words.units, 0
        for lineno, ident, fields in block.tokens:
            form, misc = fields[_FORM], parse_dict_value(fields[_MISC])
            if type(ident) is not int:
                if ident[1] == "-":
                    range_end = ident[2]
                    units.append([form, _space_after(misc), 0])
                continue
            if not form:
                raise UserError("FORM is empty", path, lineno)
            if key is None:
                tag = fields[place]
            else:
                tag = misc.get(key) if misc else None
            if tag is None or tag == "_":
                tag = "O"
            elif tag != "O" and not is_tag(tag):  # the message never quotes it: it could be text
                where = f"MISC {key}" if key else CONLLU_FIELDS[place].upper()
                raise UserError(f"{where} is not an IOB2 tag (O, B-TYPE or I-TYPE)", path, lineno)
            if ident <= range_end and units:
                units[-1][2] += 1
            else:
                units.append([form, _space_after(misc), 1])
            words.forms.append(form)
            words.tags.append(tag)
            words.lines.append(lineno)
        return words

    def _document(self, doc_id: str, sentences: list[_Words], path: Path) -> NerDocument:
        """Text and offsets from `# text` (or rebuilt), entities from the tags under the `discontinuous` policy,
        then the tags derived from those entities."""
        join, source = self.columns.discontinuous == "join", str(path)
        texts, words_by_sentence, gold, base = [], [], [], 0
        for sentence in sentences:
            surfaces = [unit[0] for unit in sentence.units]
            starts = _aligned(sentence.text, surfaces) if sentence.text is not None else None
            if starts is not None:
                text = sentence.text
            else:
                if sentence.text is not None:
                    self.mismatched += 1
                    self.first_mismatch = self.first_mismatch or sentence.lines[0]
                text, starts = _rebuilt(sentence.units)
            words = _words(sentence, starts, base)
            entities, bare = sentence_entities(words, sentence.tags, sentence.lines, source, join)
            gold.extend(entities)
            self.bare_inside += bare
            texts.append(text + "\n")
            words_by_sentence.append(words)
            base += len(text) + 1
        tags_by_sentence = sentence_tags(words_by_sentence, gold)
        sentences_out = [Sentence(doc_id, words, tags) for words, tags in zip(words_by_sentence, tags_by_sentence)]
        return NerDocument(doc_id, "".join(texts), sentences_out, gold)

    def _log(self, path: Path, skipped: int, bare: int) -> None:
        """One line per kind of change, per file; counts and line numbers only, never text."""
        if skipped:
            log.warning("%s: %d token lines without 10 fields skipped (short_lines: skip)", path, skipped)
        if bare and self.columns.discontinuous == "split":
            log.warning("%s: %d I- tags did not continue an entity and were read as B- (IOB2 repair)", path, bare)
        elif bare:
            log.warning("%s: %d I- tags did not continue an entity: joined to the sentence's previous entity of "
                        "their type as a further fragment (discontinuous: join), or read as B- where it has none",
                        path, bare)
        if self.mismatched:
            log.warning("%s:%d: %d sentences whose FORMs are not in their `# text` in order (the first at this "
                        "line): their offsets point into text rebuilt from FORM and SpaceAfter=No", path,
                        self.first_mismatch, self.mismatched)


def _space_after(misc: dict[str, str | None] | None) -> bool:
    """SpaceAfter=No in MISC says the surface is glued to the next."""
    return not misc or misc.get("SpaceAfter") != "No"


def _aligned(text: str, surfaces: list[str]) -> list[int] | None:
    """Where each surface starts in `text`, each after only whitespace; None where one is not there or text is
    left over."""
    starts, at, space = [], 0, _SPACES.match
    for surface in surfaces:
        at = space(text, at).end()
        if not text.startswith(surface, at):
            return None
        starts.append(at)
        at += len(surface)
    return starts if not text[at:].strip() else None


def _rebuilt(units: list[list]) -> tuple[str, list[int]]:
    """The text UD's FORM and SpaceAfter=No describe, and where each surface starts in it."""
    parts, starts, at, last = [], [], 0, len(units) - 1
    for k, (surface, space_after, _) in enumerate(units):
        starts.append(at)
        parts.append(surface)
        at += len(surface)
        if space_after and k < last:
            parts.append(" ")
            at += 1
    return "".join(parts), starts


def _words(sentence: _Words, starts: list[int], base: int) -> list[Word]:
    """Words with document offsets: a single word is its surface, a multiword token's words share theirs."""
    words, i, forms = [], 0, sentence.forms
    for (surface, _, count), start in zip(sentence.units, starts):
        start += base
        if count == 1:
            words.append(Word(forms[i], start, start + len(surface)))
        elif count:
            pieces = _pieces(start, start + len(surface), forms[i:i + count])
            words.extend(Word(form, s, e) for form, (s, e) in zip(forms[i:i + count], pieces))
        i += count
    return words


def _pieces(start: int, end: int, forms: Sequence[str]) -> list[tuple[int, int]]:
    """A multiword token's surface split among its words in order, in proportion to their FORMs' lengths, each at
    least one character; all of it for each word where the surface is shorter than the words are many."""
    n = len(forms)
    if end - start < n:
        return [(start, end)] * n
    total, bounds, so_far = sum(map(len, forms)), [start], 0
    for k, form in enumerate(forms[:-1], 1):
        so_far += len(form)
        bounds.append(max(bounds[-1] + 1, min(start + round((end - start) * so_far / total), end - (n - k))))
    bounds.append(end)
    return list(zip(bounds, bounds[1:]))
