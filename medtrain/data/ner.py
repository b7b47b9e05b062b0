"""NER data: column (CoNLL) and BRAT standoff readers -> documents with text, gold entities and IOB2 words;
label maps; first-subword alignment; windows; BRAT output; exact-offset scores.

Readers (`read_ner`, `read_ner_corpus`) give documents with a `text`, every gold `Entity` (character offsets into
that text) and sentences of words with IOB2 tags derived from the entities. Errors name the file and line and
never quote the text (it is clinical data).

    conll   a column file (`ColumnFormat`: token and tag column, separator, document marker), or a folder of them
            read in name order. A blank line ends a sentence, a line whose first non-space character is `#` is a
            comment, a line whose first column is the marker (`-DOCSTART-`) starts a new document; with no
            marker each file is one document. Column files have no offsets, so a document's `text` is synthetic:
            words joined by one space, sentences by a newline (`synthetic_text`), which is also the .txt
            `write_brat` writes for it. Entities come from the tags; a bare I-X (one that does not continue an X
            entity) starts a new entity (`discontinuous: split`, IOB2 repair) or, after a gap, becomes a further
            fragment of the sentence's previous X entity (`join`, as MoNERo marks discontinuous entities).
    brat    a folder of `<name>.txt` + `<name>.ann`, read in name order; a .txt without .ann is unannotated.
            Only entity lines (`T..`) are read; relations, events, attributes, normalizations (`N`) and notes
            (`#`) are ignored. Sentences are the lines of the .txt; words are TOKEN_PATTERN matches (runs of word
            characters or single other characters) with their character offsets.

`read_ner_corpus` also returns what reading changed (`NerCorpus`: skipped short lines, bare I- tags, entities
dropped by or missing from the label map), for a run to report; `read_ner` returns the documents only.

Labels (`apply_labels`, a `LabelConfig` and the corpus's language): entity types are renamed by the language's
map, types outside `keep` are dropped, and the tags are derived again from the entities that remain, so training
and evaluation use the shared label space. Every entity remembers the file and line it was read from (not part
of its equality) so a strict map can point at an unmapped type.

Tags from entities: nested, overlapping and discontinuous entities become IOB2 by the policy of
`medtrain.data.sample.spans` (`flat_spans`): each fragment of a discontinuous entity is a span of its own (so a
later fragment begins with B-); then the longer span wins, at equal length a whole entity beats a fragment, then
the earlier start, then the order of ENTITY_TYPES (other types after these, by name); losers are dropped. A span
that starts or ends inside a word takes the whole word.

IOB2 repair: an I-X that does not continue an X entity becomes B-X (`repair_iob2`); predictions are repaired in
`decode`. Tags other than O, B-TYPE and I-TYPE (`X-DRUG`, `B-`, BIOES prefixes) are errors.

Windows (`encode`): a sentence whose subwords do not fit `max_length` is split into windows of whole words. Each
window predicts the words after the previous window's last one, preceded by up to `stride_words` words of left
context that carry no label and are not predicted, so every word is predicted exactly once. A `Feature` maps each
token back to its word's index in the sentence (`word_index`); `decode` writes each prediction there. A word the
tokenizer drops entirely (a soft hyphen, a zero-width space) has no token: `decode` lets it continue an entity
that goes on after it, else tags it "O".
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medtrain.data.ner_format import ColumnFormat, LabelConfig
from medtrain.data.sample import ENTITY_TYPES, TOKEN_PATTERN
from medtrain.errors import UserError
from medtrain.io import write_text_atomic

__all__ = [
    "Entity", "Feature", "NerCorpus", "NerDocument", "Sentence", "Word", "apply_labels", "corpus_span_scores",
    "decode", "encode", "exact_span_scores", "flat_spans", "label_list", "read_ner", "read_ner_corpus",
    "repair_iob2", "synthetic_text", "tags_to_entities", "words_by_line", "write_brat",
]

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of specials, continuation subwords and context words: no loss there
DEFAULT_STRIDE_WORDS = 16  # left-context words in the second and later windows of a long sentence
_TAG = re.compile(r"O|[BI]-\S+")
_OFFSETS = re.compile(r"(\d+) (\d+)")
_ColumnSentence = tuple[list[str], list[str], list[int]]  # tokens, tags and line numbers of one sentence
_SPLITTERS: dict[str | None, Callable[[str], list[str]]] = {
    None: str.split, "tab": partial(str.split, sep="\t"), "space": partial(str.split, sep=" "),
}


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


def _type_rank(entity_type: str) -> tuple[int, str]:
    """ENTITY_TYPES order first (as sample.py), then any other type by name."""
    known = ENTITY_TYPES.index(entity_type) if entity_type in ENTITY_TYPES else len(ENTITY_TYPES)
    return known, entity_type


def flat_spans(entities: Iterable[Entity]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, type) spans in order: the nested/discontinuous policy of the module docstring.

    Covered characters are marked in a bytearray, so a document of 100k entities costs its characters, not the
    square of its entities.
    """
    candidates = [(s, e, entity.type, len(entity.fragments) > 1) for entity in entities for s, e in entity.fragments]
    candidates.sort(key=lambda c: (c[0] - c[1], c[3], c[0], _type_rank(c[2])))
    covered = bytearray(max((c[1] for c in candidates), default=0))
    kept: list[tuple[int, int, str]] = []
    for start, end, entity_type, _ in candidates:
        if covered.find(1, start, end) < 0:
            covered[start:end] = b"\x01" * (end - start)
            kept.append((start, end, entity_type))
    return sorted(kept)


def _sentence_tags(sentences: Sequence[Sequence[Word]], entities: Iterable[Entity]) -> list[list[str]]:
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


# ----------------------------------------------------------------------------- readers


def read_ner(path: str | Path, format: Literal["brat", "conll"],
             columns: ColumnFormat | None = None) -> list[NerDocument]:
    """The documents of a column file (or folder of them) or a BRAT folder (see the module docstring)."""
    return read_ner_corpus(path, format, columns).documents


def read_ner_corpus(path: str | Path, format: Literal["brat", "conll"], columns: ColumnFormat | None = None,
                    labels: LabelConfig | None = None, language: str | None = None) -> NerCorpus:
    """`read_ner` with its counts; with `labels`, in the label space of `language` (`apply_labels`).

    `columns` applies to column files only (default: `ColumnFormat()`, token first and tag last).
    """
    path = Path(path)
    if format == "conll":
        corpus = _read_columns(path, columns or ColumnFormat())
    elif format == "brat":
        corpus = NerCorpus(_read_brat(path))
    else:
        raise UserError(f"unknown NER format {format!r}; use 'brat' or 'conll'")
    return corpus if labels is None else apply_labels(corpus, labels, language)


def apply_labels(corpus: NerCorpus, labels: LabelConfig, language: str | None) -> NerCorpus:
    """Entities renamed by `labels.map[language]`, those outside `labels.keep` dropped (counted per type), and
    every sentence's tags derived again from the entities left.

    Under `labels.strict`, a type the language's map lacks is an error at the file and line of its entity.
    """
    rename = labels.rename(language) if language is not None else {}
    strict = labels.strict and language in labels.map
    keep = None if labels.keep is None else set(labels.keep)
    dropped: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    documents = []
    for doc in corpus.documents:
        entities = []
        for entity in doc.entities:
            shared = rename.get(entity.type)
            if shared is None and rename:
                if strict:
                    raise UserError(f"entity type {entity.type} has no entry in labels.map.{language} "
                                    "(labels.strict is set)", *(entity.source or ()))
                unmapped[entity.type] += 1
            shared = shared or entity.type
            if keep is not None and shared not in keep:
                dropped[shared] += 1
                continue
            entities.append(entity if shared == entity.type else replace(entity, type=shared))
        tags = _sentence_tags([s.words for s in doc.sentences], entities)
        sentences = [Sentence(s.doc_id, s.words, t) for s, t in zip(doc.sentences, tags)]
        documents.append(replace(doc, sentences=sentences, entities=entities))
    return replace(corpus, documents=documents, dropped=dropped, unmapped=unmapped)


def _read_columns(path: Path, columns: ColumnFormat) -> NerCorpus:
    """Every column file (one, or a folder's in name order) into documents; counts logged and returned."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise UserError("no column files in this folder", path)
    elif path.is_file():
        files = [path]
    else:
        raise UserError("column (CoNLL) file not found", path)
    reader = _ColumnReader(columns)
    with _gc_paused():
        documents = [doc for file in files for doc in reader.read(file)]
    if not documents:
        raise UserError("no sentences in this column file" if path.is_file() else "no sentences in these files", path)
    ids = Counter(doc.doc_id for doc in documents)
    if len(ids) < len(documents):
        raise UserError(f"two files give the document id {ids.most_common(1)[0][0]}; rename one", path)
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
def _gc_paused() -> Iterator[None]:
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
        token_at, tag_at, split, is_tag = self.columns.token, self.columns.tag, self.split, _TAG.fullmatch
        document: list[_ColumnSentence] = []
        tokens: list[str] = []
        tags: list[str] = []
        lines: list[int] = []
        for lineno, line in enumerate(_decoded_lines(path), 1):
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
        join = self.columns.discontinuous == "join"
        text, words_by_sentence, entities, offset = [], [], [], 0
        for tokens, tags, lines in block:
            words, current, last_of_type = [], None, {}
            for token, tag, lineno in zip(tokens, tags, lines):
                end = offset + len(token)
                words.append(Word(token, offset, end))
                if tag == "O":
                    current = None
                elif tag[0] == "I" and current is not None and current[0] == tag[2:]:
                    current[1][-1] = (current[1][-1][0], end)
                else:
                    if tag[0] == "I":
                        self.bare_inside += 1
                    if tag[0] == "I" and join and tag[2:] in last_of_type:
                        current = last_of_type[tag[2:]]
                        current[1].append((offset, end))
                    else:
                        current = (tag[2:], [(offset, end)], lineno)
                        last_of_type[tag[2:]] = current
                        entities.append(current)
                offset = end + 1
            text.append(" ".join(tokens) + "\n")
            words_by_sentence.append(words)
        source = str(path)
        gold = [Entity(t, tuple(fragments), (source, lineno)) for t, fragments, lineno in entities]
        tags_by_sentence = _sentence_tags(words_by_sentence, gold)
        sentences = [Sentence(doc_id, words, tags) for words, tags in zip(words_by_sentence, tags_by_sentence)]
        return NerDocument(doc_id, "".join(text), sentences, gold)


def _decoded_lines(path: Path) -> list[str]:
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


def _read_brat(folder: Path) -> list[NerDocument]:
    """Every .txt in name order with its .ann entities; an .ann without its .txt is an error."""
    if not folder.is_dir():
        raise UserError("BRAT folder not found", folder)
    texts = {p.stem: p for p in folder.glob("*.txt")}
    for ann in sorted(folder.glob("*.ann")):
        if ann.stem not in texts:
            raise UserError(f"no {ann.stem}.txt beside this .ann file", ann)
    if not texts:
        raise UserError("no .txt files in this BRAT folder", folder)
    return [_read_brat_document(texts[name]) for name in sorted(texts)]


def _read_brat_document(txt: Path) -> NerDocument:
    try:
        with open(txt, encoding="utf-8", newline="") as f:  # newline="": offsets count "\r" too
            text = f.read()
    except UnicodeDecodeError:
        raise UserError("not valid UTF-8", txt) from None
    ann = txt.with_suffix(".ann")
    entities = _read_ann(ann, text) if ann.is_file() else []
    lines = words_by_line(text)
    sentences = [Sentence(txt.stem, words, tags) for words, tags in zip(lines, _sentence_tags(lines, entities))]
    return NerDocument(txt.stem, text, sentences, entities)


def _read_ann(path: Path, text: str) -> list[Entity]:
    """Entity (`T`) lines; every other kind of annotation line (R, E, A, N, #) is ignored."""
    return [_parse_entity(line.rstrip("\r"), text, path, lineno)
            for lineno, line in enumerate(_decoded_lines(path), 1) if line.startswith("T")]


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


# ----------------------------------------------------------------------------- labels, encoding, decoding


def label_list(docs_by_language: Iterable[list[NerDocument]]) -> list[str]:
    """"O", then B-/I- of every type seen anywhere, by type: one label-id space shared by all languages."""
    types = {
        tag[2:]
        for docs in docs_by_language for doc in docs for sentence in doc.sentences
        for tag in sentence.tags if tag != "O"
    }
    return ["O"] + [f"{prefix}-{t}" for t in sorted(types) for prefix in "BI"]


def encode(sentences: Sequence[Sentence], tokenizer: Any, label2id: Mapping[str, int], max_length: int,
           stride_words: int = DEFAULT_STRIDE_WORDS) -> list[Feature]:
    """Sentences -> features with first-subword labels; long sentences become windows (module docstring).

    A tag missing from `label2id` (a type seen only in a test set) is trained as "O"; the sentences' own tags
    are left untouched, so evaluation still counts that type.
    """
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise UserError(f"max_length {max_length} leaves no room for words after the special tokens")
    pieces = _subword_counts(sentences, tokenizer)
    plan = [(i, *window) for i, counts in enumerate(pieces) for window in _windows(counts, budget, stride_words)]
    batch = tokenizer([[w.text for w in sentences[i].words[context:end]] for i, context, _, end in plan],
                      is_split_into_words=True, truncation=True, max_length=max_length)
    _log_unseen(sentences, label2id)
    return [_feature(sentences[i], i, context, start, batch.word_ids(k), batch["input_ids"][k], label2id)
            for k, (i, context, start, _) in enumerate(plan)]


def _subword_counts(sentences: Sequence[Sentence], tokenizer: Any) -> list[list[int]]:
    """Subwords per word (0 for a word the tokenizer drops entirely, e.g. a lone zero-width character)."""
    batch = tokenizer([[w.text for w in s.words] for s in sentences], is_split_into_words=True,
                      add_special_tokens=False, verbose=False)
    counts = []
    for k, sentence in enumerate(sentences):
        per_word = Counter(batch.word_ids(k))
        counts.append([per_word[j] for j in range(len(sentence.words))])
    return counts


def _windows(pieces: Sequence[int], budget: int, stride_words: int) -> list[tuple[int, int, int]]:
    """(first context word, first predicted word, end) per window; context uses at most half the budget.

    A single word longer than the whole budget gets a window of its own and loses its last subwords to truncation;
    its first subword, which carries its label, stays.
    """
    windows, start = [], 0
    while start < len(pieces):
        context = _context_start(pieces, start, stride_words, budget // 2)
        used, end = sum(pieces[context:start]), start
        while end < len(pieces) and (end == start or used + pieces[end] <= budget):
            used += pieces[end]
            end += 1
        windows.append((context, start, end))
        start = end
    return windows


def _context_start(pieces: Sequence[int], start: int, stride_words: int, limit: int) -> int:
    context, used = start, 0
    while context > 0 and start - context < stride_words and used + pieces[context - 1] <= limit:
        context -= 1
        used += pieces[context]
    return context


def _feature(sentence: Sentence, index: int, context: int, start: int, word_ids: list[int | None],
             input_ids: list[int], label2id: Mapping[str, int]) -> Feature:
    """Labels on each predicted word's first subword; specials, continuations and context words get none."""
    labels, word_index, previous = [], [], None
    outside = label2id["O"]
    for window_word in word_ids:
        word = None if window_word is None else context + window_word
        if word is None or word < start or window_word == previous:
            labels.append(IGNORE_INDEX)
            word_index.append(-1)
        else:
            labels.append(label2id.get(sentence.tags[word], outside))
            word_index.append(word)
        previous = window_word
    return Feature(list(input_ids), labels, word_index, index, start)


def _log_unseen(sentences: Sequence[Sentence], label2id: Mapping[str, int]) -> None:
    unseen = Counter(tag for s in sentences for tag in s.tags if tag not in label2id)
    if unseen:
        log.warning("%d words carry labels outside the label set (%s); trained as O, still evaluated as gold",
                    sum(unseen.values()), ", ".join(sorted(unseen)))


def decode(features: Sequence[Feature], logits_or_pred_ids: Any, id2label: Mapping[int, str] | Sequence[str],
           sentences: Sequence[Sentence]) -> list[list[str]]:
    """Word tags per sentence from each word's first-subword prediction, IOB2-repaired.

    `logits_or_pred_ids` holds one row per feature (padding after the feature's tokens is ignored): logits
    (tokens x labels) or label ids (tokens), as numpy arrays, torch tensors or lists. A word the tokenizer
    drops entirely is never predicted: it continues an entity that goes on after it, else it is "O".
    """
    tags = [["O"] * len(s.words) for s in sentences]
    predicted = [[False] * len(s.words) for s in sentences]
    for feature, row in zip(features, logits_or_pred_ids, strict=True):
        ids = _label_ids(row)
        for position, word in enumerate(feature.word_index):
            if word >= 0:
                tags[feature.sentence_index][word] = id2label[int(ids[position])]
                predicted[feature.sentence_index][word] = True
    return [repair_iob2(_fill_dropped(t, p)) for t, p in zip(tags, predicted)]


def _fill_dropped(tags: list[str], predicted: list[bool]) -> list[str]:
    """A word with no subwords (a soft hyphen, a zero-width space) inside a predicted entity continues it."""
    for j in range(1, len(tags)):
        if predicted[j] or tags[j - 1] == "O":
            continue
        following = next((tags[k] for k in range(j + 1, len(tags)) if predicted[k]), "O")
        if following == f"I-{tags[j - 1][2:]}":
            tags[j] = following
    return tags


def _label_ids(row: Any) -> np.ndarray:
    if hasattr(row, "detach"):  # a torch tensor, possibly bf16 or on a GPU
        row = row.detach().cpu()
        row = (row.float() if row.is_floating_point() else row).numpy()
    row = np.asarray(row)
    return row.argmax(-1) if row.ndim == 2 else row


# ----------------------------------------------------------------------------- entities, BRAT output, scores


def tags_to_entities(sentence: Sentence, tags: Sequence[str]) -> list[Entity]:
    """Contiguous entities from IOB2 tags (repaired first), offsets from the sentence's words."""
    runs: list[tuple[str, int, int]] = []  # (type, start, end)
    for word, tag in zip(sentence.words, repair_iob2(tags)):
        if tag.startswith("I-"):  # after repair, an I- always continues the last run
            runs[-1] = (runs[-1][0], runs[-1][1], word.end)
        elif tag.startswith("B-"):
            runs.append((tag[2:], word.start, word.end))
    return [Entity(t, ((start, end),)) for t, start, end in runs]


def write_brat(doc: NerDocument, entities: Iterable[Entity], path: str | Path) -> None:
    """Write `path` (.ann) and the .txt beside it, atomically, so the folder opens in brat and in read_ner.

    A CoNLL document's .txt is its `synthetic_text`, which its words' offsets point into.
    """
    path = Path(path)
    text = doc.text if doc.text is not None else synthetic_text(doc)
    order = sorted(entities, key=lambda e: (e.start, -e.end, _type_rank(e.type), e.fragments))
    lines = []
    for i, entity in enumerate(order, 1):
        offsets = ";".join(f"{s} {e}" for s, e in entity.fragments)
        surface = re.sub(r"[\t\r\n]", " ", " ".join(text[s:e] for s, e in entity.fragments))
        lines.append(f"T{i}\t{entity.type} {offsets}\t{surface}\n")
    write_text_atomic(path.with_suffix(".txt"), text)
    write_text_atomic(path, "".join(lines))


def exact_span_scores(gold: Iterable[Entity], pred: Iterable[Entity]) -> dict[str, Any]:
    """Micro and per-type precision/recall/F1 over exact (type, fragments) matches in ONE document.

    Gold keeps every nested and discontinuous entity, which a flat IOB2 tagger cannot all predict: a perfect
    tagger's recall is `recall_ceiling` (the gold entities that survive `flat_spans` whole), so read recall
    against it. For several documents use `corpus_span_scores` (offsets only mean something within a document).
    """
    return corpus_span_scores([gold], [pred])


def corpus_span_scores(gold_by_doc: Iterable[Iterable[Entity]],
                       pred_by_doc: Iterable[Iterable[Entity]]) -> dict[str, Any]:
    """`exact_span_scores` summed over documents: gold and predicted entity lists aligned by document."""
    correct, support, predicted, reachable = Counter(), Counter(), Counter(), Counter()
    for gold_entities, pred_entities in zip(gold_by_doc, pred_by_doc, strict=True):
        gold = Counter((e.type, e.fragments) for e in gold_entities)
        pred = Counter((e.type, e.fragments) for e in pred_entities)
        flat = Counter((t, ((s, e),)) for s, e, t in flat_spans(Entity(t, f) for t, f in gold.elements()))
        for counts, keys in ((correct, gold & pred), (support, gold), (predicted, pred), (reachable, gold & flat)):
            counts.update(t for t, _ in keys.elements())
    totals = [sum(c.values()) for c in (correct, support, predicted, reachable)]
    per_type = {t: _scores(correct[t], support[t], predicted[t], reachable[t]) for t in sorted(support | predicted)}
    return {**_scores(*totals), "per_type": per_type}


def _scores(correct: int, support: int, predicted: int, reachable: int) -> dict[str, float | int]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted,
            "correct": correct, "recall_ceiling": reachable / support if support else 0.0}
