"""Column (CoNLL) files: one token per line, its tag in a column, blank lines between sentences.

A line whose first non-space character is `#` is a comment, a line whose first column is the marker
(`-DOCSTART-`) starts a new document; with no marker each file is one document. Column files have no offsets, so
a document's `text` is synthetic: words joined by one space, sentences by a newline (`synthetic_text`), which is
also the .txt `write_brat` writes for it. Entities come from the tags; a bare I-X (one that does not continue an
X entity) starts a new entity (`discontinuous: split`, IOB2 repair) or, after a gap, becomes a further fragment
of the sentence's previous X entity (`join`, as MoNERo marks discontinuous entities). Tags other than O, B-TYPE
and I-TYPE (`X-DRUG`, `B-`, BIOES prefixes) are errors.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

from medtrain.data.ner.entities import Entity, NerCorpus, NerDocument, Sentence, Word, decoded_lines, sentence_tags
from medtrain.data.ner_format import ColumnFormat
from medtrain.errors import UserError

log = logging.getLogger(__name__)

TAG = re.compile(r"O|[BI]-\S+")
"""What a tag must be; the CoNLL-U reader checks MISC values with it too."""
_ColumnSentence = tuple[list[str], list[str], list[int]]  # tokens, tags and line numbers of one sentence
_SPLITTERS: dict[str | None, Callable[[str], list[str]]] = {
    None: str.split, "tab": partial(str.split, sep="\t"), "space": partial(str.split, sep=" "),
}


def read_files(path: Path, kind: str, read: Callable[[Path], list[NerDocument]]) -> list[NerDocument]:
    """The documents of one file, or of a folder's files in name order (`kind` names them in errors: "column",
    "CoNLL-U"); every document id must be unique over the files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise UserError(f"no {kind} files in this folder", path)
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{kind} file not found", path)
    with gc_paused():
        documents = [doc for file in files for doc in read(file)]
    if not documents:
        raise UserError(f"no sentences in this {kind} file" if path.is_file() else "no sentences in these files",
                        path)
    ids = Counter(doc.doc_id for doc in documents)
    if len(ids) < len(documents):
        raise UserError(f"two files give the document id {ids.most_common(1)[0][0]}; rename one", path)
    return documents


def read_columns(path: Path, columns: ColumnFormat) -> NerCorpus:
    """Every column file (one, or a folder's in name order) into documents; counts logged and returned."""
    reader = _ColumnReader(columns)
    documents = read_files(path, "column", reader.read)
    if reader.skipped:
        log.warning("%s: %d lines with fewer than %d columns skipped (short_lines: skip)", path, reader.skipped,
                    columns.min_columns())
    if reader.bare_inside and columns.discontinuous == "split":
        log.warning("%s: %d I- tags did not continue an entity and were read as B- (IOB2 repair)", path,
                    reader.bare_inside)
    elif reader.bare_inside:
        log.warning("%s: %d I- tags did not continue an entity: joined to the sentence's previous entity of their "
                    "type as a further fragment (discontinuous: join), or read as B- where it has none", path,
                    reader.bare_inside)
    return NerCorpus(documents, reader.skipped, reader.bare_inside)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Reading makes millions of small objects and no reference cycles: the cyclic collector's passes over them
    would double the time of a large file (measured by benchmarks/ner_data.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _ColumnReader:
    """Reads column files under one ColumnFormat, counting skipped lines and bare I- tags over all of them."""

    def __init__(self, columns: ColumnFormat):
        self.columns = columns
        self.split = _SPLITTERS[columns.separator]
        self.skipped = 0
        self.bare_inside = 0

    def read(self, path: Path) -> list[NerDocument]:
        """Documents at the marker (ids `<stem>-NNNN`), or the whole file as one (id `<stem>`)."""
        blocks = [block for block in self._blocks(path) if block]
        if self.columns.document_marker is None:
            return [self._document(path.stem, block, path) for block in blocks]
        return [self._document(f"{path.stem}-{i:04d}", block, path) for i, block in enumerate(blocks)]

    def _blocks(self, path: Path) -> Iterator[list[_ColumnSentence]]:
        """One list of sentences per document. The loop is the reader's hot path (a 1M-token file in seconds)."""
        marker, need = self.columns.document_marker, self.columns.min_columns()
        skip = self.columns.short_lines == "skip"
        token_at, tag_at, split, is_tag = self.columns.token, self.columns.tag, self.split, TAG.fullmatch
        document: list[_ColumnSentence] = []
        tokens: list[str] = []
        tags: list[str] = []
        lines: list[int] = []
        for lineno, line in enumerate(decoded_lines(path), 1):
            stripped = line.strip()
            if not stripped or stripped[0] == "#":  # a blank line ends a sentence; a comment changes nothing
                if tokens and not stripped:
                    document.append((tokens, tags, lines))
                    tokens, tags, lines = [], [], []
                continue
            fields = split(line)
            if fields[0].strip() == marker:
                if tokens:
                    document.append((tokens, tags, lines))
                    tokens, tags, lines = [], [], []
                yield document
                document = []
                continue
            if len(fields) < need:
                if skip:
                    self.skipped += 1
                    continue
                raise UserError(f"expected {need} columns, found {len(fields)}", path, lineno)
            token, tag = fields[token_at].strip(), fields[tag_at].strip()
            if not token:
                raise UserError(f"column {token_at} (the token) is empty", path, lineno)
            if tag != "O" and not is_tag(tag):  # the message never quotes it: a shifted column could be text
                index = tag_at if tag_at >= 0 else len(fields) - 1
                raise UserError(f"column {index} is not an IOB2 tag (O, B-TYPE or I-TYPE)", path, lineno)
            tokens.append(token)
            tags.append(tag)
            lines.append(lineno)
        if tokens:
            document.append((tokens, tags, lines))
        yield document

    def _document(self, doc_id: str, block: list[_ColumnSentence], path: Path) -> NerDocument:
        """Synthetic text and offsets (one space between words, a newline after each sentence), entities from the
        tags under the `discontinuous` policy, then the tags derived from those entities."""
        join, source = self.columns.discontinuous == "join", str(path)
        text, words_by_sentence, gold, offset = [], [], [], 0
        for tokens, tags, lines in block:
            words = []
            for token in tokens:
                end = offset + len(token)
                words.append(Word(token, offset, end))
                offset = end + 1
            entities, bare = sentence_entities(words, tags, lines, source, join)
            gold.extend(entities)
            self.bare_inside += bare
            text.append(" ".join(tokens) + "\n")
            words_by_sentence.append(words)
        tags_by_sentence = sentence_tags(words_by_sentence, gold)
        sentences = [Sentence(doc_id, words, tags) for words, tags in zip(words_by_sentence, tags_by_sentence)]
        return NerDocument(doc_id, "".join(text), sentences, gold)


def sentence_entities(words: Sequence[Word], tags: Sequence[str], lines: Sequence[int], source: str,
                      join: bool) -> tuple[list[Entity], int]:
    """One sentence's entities from its IOB2 tags, and how many of its I- tags were bare (did not continue an
    entity). A bare I-X starts a new entity, or under `join` (MoNERo's discontinuous entities) becomes a further
    fragment of the sentence's latest X entity. Shared with the CoNLL-U reader, so both formats read alike; each
    entity remembers (source, line of its first tag)."""
    drafts: list[tuple[str, list[tuple[int, int]], int]] = []  # type, fragments so far, line
    current, last_of_type, bare = None, {}, 0
    for word, tag, lineno in zip(words, tags, lines):
        if tag == "O":
            current = None
        elif tag[0] == "I" and current is not None and current[0] == tag[2:]:
            current[1][-1] = (current[1][-1][0], word.end)
        else:
            if tag[0] == "I":
                bare += 1
            if tag[0] == "I" and join and tag[2:] in last_of_type:
                current = last_of_type[tag[2:]]
                current[1].append((word.start, word.end))
            else:
                current = (tag[2:], [(word.start, word.end)], lineno)
                last_of_type[tag[2:]] = current
                drafts.append(current)
    return [Entity(t, tuple(fragments), (source, lineno)) for t, fragments, lineno in drafts], bare
