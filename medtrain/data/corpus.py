"""Raw corpora -> a stream of documents tagged (corpus, language, domain), one at a time.

Four formats, all read incrementally so memory does not grow with the corpus:

    txt       one document per line (`text_format: lines`) or blank-line separated (`paragraphs`)
    jsonl     one JSON object per line with a string field (`text` by default)
    parquet   a string column, read one record batch at a time
    saved     a folder written by `datasets.Dataset.save_to_disk` (memory-mapped Arrow)

Every document carries the file and line (txt, jsonl) or record number (parquet, saved) it came from,
so an error can say where to look. Errors never quote the text: it is clinical data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from medtrain.errors import UserError

Format = Literal["auto", "txt", "jsonl", "parquet", "saved"]
_SUFFIX_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ARROW_BATCH = 1024  # records per Arrow batch: large enough to be fast, small enough to stay flat


@dataclasses.dataclass
class CorpusConfig:
    """One input corpus: where it is, how to read it, and the tags its documents carry."""

    name: str  # names its shard folders and manifest entry: letters, digits, '_', '-', '.'
    path: Path  # a file, or a `save_to_disk` folder; relative paths are resolved against data_root
    language: str  # tag, e.g. "nl", "ro", "es"
    domain: str  # tag, e.g. "clinical", "biomedical", "general"
    weight: float = 1.0  # relative sampling weight when the stream mixes corpora; must be > 0
    format: Format = "auto"  # auto: .txt, .jsonl/.ndjson, .parquet by suffix; a folder is "saved"
    text_format: Literal["lines", "paragraphs"] = "lines"  # txt only: a document per line, or per blank-line block
    text_field: str = "text"  # jsonl/parquet/saved: the field or column holding the document

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"corpus name {self.name!r} must be letters, digits, '_', '-' or '.' "
                             "(it names a folder)")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"corpus {self.name!r}: weight must be a positive number, got {self.weight}")


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    """One document and where it came from (`line`: file line, or record number for parquet/saved)."""

    text: str
    corpus: str
    language: str
    domain: str
    path: str
    line: int
    fields: tuple[str, ...] = ()
    """The values of the record fields the reader was asked for (`exclude.by`) that this record has."""


class CorpusReader:
    """Iterates the documents of one corpus; `skipped` counts documents dropped for undecodable bytes.

    `fields`: record fields (jsonl keys, parquet and saved columns) whose values each document carries, e.g.
    patient_id for `exclude.by`; a record without one simply lacks that value."""

    def __init__(self, corpus: CorpusConfig, path: Path, on_decode_error: Literal["fail", "skip"] = "fail",
                 fields: tuple[str, ...] = ()):
        self.corpus = corpus
        self.path = path
        self.on_decode_error = on_decode_error
        self.format = ""
        self.skipped = 0
        self.wanted = fields
        self.fields: tuple[str, ...] = ()
        """The wanted fields this corpus has (set by check())."""

    def check(self) -> None:
        """Fail early on a missing or empty input, before any tokenizing."""
        if not self.path.exists():
            raise UserError(f"corpus {self.corpus.name!r}: file not found", self.path)
        self.format = resolve_format(self.corpus, self.path)
        if self.format == "saved":
            if not self.path.is_dir():
                raise UserError(f"corpus {self.corpus.name!r}: format 'saved' needs a save_to_disk folder",
                                self.path)
        elif not self.path.is_file():
            raise UserError(f"corpus {self.corpus.name!r}: expected a {self.format} file, found a folder",
                            self.path)
        elif self.path.stat().st_size == 0:
            raise UserError(f"corpus {self.corpus.name!r}: file is empty", self.path)
        self.fields = tuple(f for f in self.wanted if f in self._field_names())

    def has_field(self, name: str) -> bool:
        """Whether this corpus's records have the field (jsonl: its first record; parquet, saved: a column)."""
        return name in self.fields

    def _field_names(self) -> set[str]:
        if self.format == "jsonl":
            for line, _ in self._lines():
                if line is not None and line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        return set()  # reading will name the line
                    return set(record) if isinstance(record, dict) else set()
            return set()
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                return set(pq.read_schema(self.path).names)
            except OSError:
                return set()
        if self.format == "saved":
            import datasets

            try:
                dataset = datasets.load_from_disk(str(self.path))
            except (FileNotFoundError, ValueError):
                return set()
            return set(dataset.column_names) if isinstance(dataset, datasets.Dataset) else set()
        return set()

    def __iter__(self) -> Iterator[Document]:
        self.check()
        self.skipped = 0
        read = {"txt": self._txt, "jsonl": self._jsonl, "parquet": self._parquet, "saved": self._saved}
        c, where = self.corpus, str(self.path)
        count = 0
        for text, line, *values in read[self.format]():
            if text.strip():
                count += 1
                yield Document(text, c.name, c.language, c.domain, where, line,
                               tuple(str(v) for v in values[0] if v is not None) if values else ())
        if count == 0:
            reason = f"all {self.skipped} documents had undecodable bytes" if self.skipped else "only blank text"
            raise UserError(f"corpus {c.name!r}: no documents ({reason})", self.path)

    # ------------------------------------------------------------------ line-based formats

    def _lines(self) -> Iterator[tuple[str | None, int]]:
        """(decoded line or None if undecodable and skipping, 1-based line number); bytes read lazily."""
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if self.on_decode_error == "fail":
                        raise UserError(f"not valid UTF-8 (byte {exc.start + 1} of the line); set "
                                        "on_decode_error: skip to drop such documents", self.path, number) from None
                    yield None, number
                    continue
                if number == 1:
                    line = line.removeprefix("\ufeff")  # a byte-order mark is not text
                yield line, number

    def _txt(self) -> Iterator[tuple[str, int]]:
        if self.corpus.text_format == "lines":
            for line, number in self._lines():
                if line is None:
                    self.skipped += 1
                else:
                    yield line.rstrip("\r\n"), number
            return
        block: list[str] = []
        start, bad = 0, False
        for line, number in self._lines():
            if line is not None and not line.strip():
                if block or bad:
                    yield from self._end_paragraph(block, start, bad)
                block, bad = [], False
                continue
            if not block and not bad:
                start = number
            if line is None:
                bad = True
            else:
                block.append(line.rstrip("\r\n"))
        yield from self._end_paragraph(block, start, bad)

    def _end_paragraph(self, block: list[str], start: int, bad: bool) -> Iterator[tuple[str, int]]:
        """A paragraph with an undecodable line is dropped whole rather than silently cut."""
        if bad:
            self.skipped += 1
        elif block:
            yield "\n".join(block), start

    def _jsonl(self) -> Iterator[tuple[str, int]]:
        field = self.corpus.text_field
        for line, number in self._lines():
            if line is None:
                self.skipped += 1
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"not valid JSON ({exc.msg} at column {exc.colno})", self.path, number) from None
            if not isinstance(record, dict):
                raise UserError(f"expected a JSON object with a string {field!r} field, got a "
                                f"{type(record).__name__}", self.path, number)
            text = record.get(field)
            if not isinstance(text, str):
                got = "no such field" if field not in record else f"a {type(text).__name__}"
                raise UserError(f"{field!r} must be a string, got {got}", self.path, number)
            if not _encodable(text):
                if self.on_decode_error == "fail":
                    raise UserError(f"{field!r} holds an unpaired surrogate escape (not valid Unicode); set "
                                    "on_decode_error: skip to drop such documents", self.path, number)
                self.skipped += 1
                continue
            if self.fields:
                yield text, number, tuple(record.get(f) for f in self.fields)
            else:
                yield text, number

    # ------------------------------------------------------------------ Arrow-based formats

    def _parquet(self) -> Iterator[tuple[str, int]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(self.path)
            self._check_column(file.schema_arrow)
            batches = file.iter_batches(batch_size=_ARROW_BATCH, columns=[self.corpus.text_field, *self.fields])
            yield from self._records(batches)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"cannot read as parquet ({exc.__class__.__name__})", self.path) from None

    def _saved(self) -> Iterator[tuple[str, int]]:
        import datasets

        try:
            dataset = datasets.load_from_disk(str(self.path))
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"not a datasets.save_to_disk folder ({exc.__class__.__name__})", self.path) from None
        if isinstance(dataset, datasets.DatasetDict):
            raise UserError(f"holds several splits ({', '.join(dataset)}); point path at one of them, "
                            f"e.g. {self.path / next(iter(dataset))}", self.path)
        self._check_column(dataset.data.schema)
        table = dataset.select_columns([self.corpus.text_field, *self.fields]).with_format("arrow")
        yield from self._records(table.iter(batch_size=_ARROW_BATCH))

    def _check_column(self, schema: Any) -> None:
        import pyarrow as pa

        field = self.corpus.text_field
        if field not in schema.names:
            raise UserError(f"no {field!r} column; set text_field to one of: {', '.join(schema.names)}", self.path)
        kind = schema.field(field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise UserError(f"column {field!r} holds {kind}, not strings", self.path)

    def _records(self, batches: Iterator[Any]) -> Iterator[tuple[Any, ...]]:
        """(text, record number) per record of Arrow batches whose first column is the text; with `fields`,
        also the tuple of the other columns' values."""
        number = 0
        for batch in batches:
            column = batch.column(0)
            values = list(zip(*(batch.column(i).to_pylist() for i in range(1, len(self.fields) + 1))))
            try:
                texts = column.to_pylist()
            except UnicodeDecodeError:  # Arrow does not validate UTF-8 on read; find the record
                texts = [self._decode_record(column, i, number + i + 1) for i in range(len(column))]
            for i, text in enumerate(texts):
                number += 1
                if text is None:
                    raise UserError(f"record {number}: {self.corpus.text_field!r} is null", self.path)
                yield (text, number, values[i]) if self.fields else (text, number)

    def _decode_record(self, column: Any, index: int, number: int) -> str | None:
        """One record's text; an undecodable one fails, or is skipped as a blank document."""
        try:
            return column[index].as_py()
        except UnicodeDecodeError:
            if self.on_decode_error == "fail":
                raise UserError(f"record {number}: not valid UTF-8; set on_decode_error: skip to drop such "
                                "documents", self.path) from None
            self.skipped += 1
            return ""


def resolve_format(corpus: CorpusConfig, path: Path) -> str:
    """The configured format, or the one the name implies."""
    if corpus.format != "auto":
        return corpus.format
    if path.is_dir():
        return "saved"
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"corpus {corpus.name!r}: cannot tell the format from the name; set format to "
                        "txt, jsonl, parquet or saved", path)
    return fmt


def _encodable(text: str) -> bool:
    """False for strings with lone surrogates (from JSON escapes), which the Rust tokenizer rejects."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
