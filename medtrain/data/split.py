"""Train/dev/test splits for corpora distributed without one (`medtrain split`), reproducible and auditable.

A source is cut into units, the units are shuffled with `random.Random(seed)` (the same order on every platform
and Python version), or kept in source order with `--order source`, and cut by ratio; each split is written in
the source's own format, every unit's lines copied byte for byte, beside `split.json` (source sha256, seed,
ratios, counts and the ids of every split's units).
The same inputs give the same bytes.

    conll   a column file. `--by document`: a unit is a document, from its `-DOCSTART-` line (with any `#` comment
            lines just before it) to the next one; lines before the first `-DOCSTART-` are a document of their own.
            `--by sentence`: a unit is a sentence (a run of lines up to a blank line, with the `#` comment lines
            just before it); `-DOCSTART-` lines are dropped (documents mean nothing once their sentences are
            shuffled apart) and counted in split.json. Units are written one blank line apart, in the source's
            newline (LF or CRLF); trailing `#` lines after the last unit stay with it. OUT/train<suffix> etc.
    conllu  a CoNLL-U file (a `.conllu` file, or --format conllu): sentences of `#` comment lines and token lines
            of 10 tab-separated fields (ranges `4-5` and empty nodes `5.1` kept, but not counted as tokens),
            each followed by one blank line (extra blank lines are dropped). `--by document`: a unit runs from
            the comment block holding a `# newdoc` line to the next such block; sentences before the first are
            a document of their own. `--by sentence`: a unit is a sentence with its comments. `# newdoc` and
            `# newpar` lines stay with the sentence after them under `--order source` (documents stay documents
            while their sentences stay in order) and are dropped and counted in split.json under shuffle, as
            `-DOCSTART-` is. Outputs end with a blank line, in the source's newline. OUT/train<suffix> etc.
    brat    a folder of `<name>.txt` (+ `<name>.ann`); a unit is a document; OUT/train/ etc.
    jsonl   screening records; a unit is a patient (every record with the same `patient_id`), so no patient's
            notes land in two splits; blank lines are dropped. OUT/train.jsonl etc.

Ids in split.json are 0-based document or sentence indices in source order (conll, conllu), document names
(brat) or patient ids (jsonl), each split's in source order. Errors name file:line and never quote the corpus.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medtrain.errors import UserError
from medtrain.io import replace_dir_atomic, write_json_atomic

__all__ = ["FORMATS", "SPLITS", "SplitResult", "detect_format", "parse_ratios", "split_corpus", "split_sizes"]

FORMATS = ("conll", "conllu", "brat", "jsonl")
SPLITS = ("train", "dev", "test")
Format = Literal["conll", "conllu", "brat", "jsonl"]
By = Literal["document", "sentence"]
Order = Literal["shuffle", "source"]
_DOCSTART = "-DOCSTART-"
_COLUMNS = ("conll", "conllu")  # formats whose units are sentences of lines, one blank line apart
_BOM = b"\xef\xbb\xbf"


@dataclass
class _Unit:
    """One indivisible piece of the source: its bytes (conll, jsonl) or its files' names and bytes (brat)."""

    id: int | str
    lines: list[bytes] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitResult:
    """What `split_corpus` wrote: one path and one count record per split, and split.json."""

    paths: dict[str, Path]
    counts: dict[str, dict[str, int]]
    unit: str
    manifest: Path

    def summary(self) -> list[str]:
        """One line per split (units, sentences or records) and the split.json path."""
        lines = []
        for name in SPLITS:
            counts = {f"{self.unit}s": self.counts[name]["units"]}
            counts.update((key, n) for key, n in self.counts[name].items() if key != "units")  # sentences once
            parts = [f"{n} {key if n != 1 else key[:-1]}" for key, n in counts.items()]
            lines.append(f"{name}: {', '.join(parts)} -> {self.paths[name]}")
        return [*lines, f"wrote {self.manifest}"]


def parse_ratios(text: str) -> tuple[float, float, float]:
    """`0.8,0.1,0.1` -> three finite, non-negative train/dev/test fractions summing to 1 (within 1e-6)."""
    parts = text.split(",")
    try:
        ratios = tuple(float(p) for p in parts)
    except ValueError:
        ratios = ()
    if len(ratios) != 3 or not all(math.isfinite(r) and r >= 0 for r in ratios):
        raise UserError(f"--ratios needs three non-negative numbers for train,dev,test, e.g. 0.8,0.1,0.1 "
                        f"(got {text!r})")
    if abs(sum(ratios) - 1) > 1e-6:
        raise UserError(f"--ratios must sum to 1 (got {text!r}, sum {sum(ratios):g})")
    return ratios  # type: ignore[return-value]


def split_sizes(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Units per split: dev and test get round-half-up(ratio * n), at least 1 where their ratio is non-zero,
    train the remainder; if rounding up left train short of its one unit, the larger of dev and test gives one."""
    least = [1 if r > 0 else 0 for r in ratios]
    if n < sum(least):
        raise ValueError(f"{n} units cannot fill {sum(least)} non-empty splits")
    dev, test = (max(lo, math.floor(r * n + 0.5)) for r, lo in zip(ratios[1:], least[1:]))
    while n - dev - test < least[0]:
        if dev - least[1] >= test - least[2]:
            dev -= 1
        else:
            test -= 1
    return n - dev - test, dev, test


def detect_format(source: Path) -> Format:
    """A folder is BRAT, a `.jsonl` file JSONL, a `.conllu` file CoNLL-U, any other file a column (CoNLL) file."""
    if source.is_dir():
        return "brat"
    suffix = source.suffix.lower()
    return "jsonl" if suffix == ".jsonl" else "conllu" if suffix == ".conllu" else "conll"


def split_corpus(source: str | Path, out: str | Path, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 seed: int = 0, by: By = "document", fmt: Format | None = None, force: bool = False,
                 order: Order = "shuffle") -> SplitResult:
    """Split SOURCE into OUT/train, dev and test plus OUT/split.json; OUT appears whole or not at all.

    order="source" cuts the units in source order (train first): sentences of one document stay together, so a
    sentence split does not put a document's neighbouring sentences (and the names in them) in train and test.

    Everything is read and checked before OUT is touched, so bad input leaves nothing behind."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise UserError("source not found", source)
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use conll, conllu, brat or jsonl")
    if by not in ("document", "sentence"):
        raise UserError(f"unknown --by {by!r}; use document or sentence")
    if order not in ("shuffle", "source"):
        raise UserError(f"unknown --order {order!r}; use shuffle or source")
    _check_out(source, out, force)
    units, digest, header, unit_name = _read(source, fmt, by, order)
    least = sum(r > 0 for r in ratios)
    if len(units) < least:
        hint = "; use --by sentence to split its sentences" if fmt in _COLUMNS and by == "document" else ""
        raise UserError(f"{len(units)} {unit_name}(s) cannot be split into {least} non-empty parts{hint}", source)

    indices = list(range(len(units)))
    if order == "shuffle":
        random.Random(seed).shuffle(indices)
    sizes = split_sizes(len(units), ratios)
    bounds = [0, sizes[0], sizes[0] + sizes[1], len(units)]
    chosen = {name: sorted(indices[bounds[i]:bounds[i + 1]]) for i, name in enumerate(SPLITS)}
    names = {name: name if fmt == "brat" else name + source.suffix for name in SPLITS}
    newline = _newline(units)
    counts = {name: _counts([units[i] for i in chosen[name]]) for name in SPLITS}
    manifest = {
        "source": str(source), "source_sha256": digest, "format": fmt, "by": by, "unit": unit_name,
        "ratios": dict(zip(SPLITS, ratios)), "order": order, "seed": seed if order == "shuffle" else None,
        "counts": counts,
        "units": {name: [units[i].id for i in chosen[name]] for name in SPLITS}, **header,
    }

    def fill(folder: Path) -> None:
        for name in SPLITS:
            picked = [units[i] for i in chosen[name]]
            if fmt == "brat":
                _write_brat(folder / names[name], picked)
            else:
                (folder / names[name]).write_bytes(_text_bytes(picked, fmt, newline))
        write_json_atomic(folder / "split.json", manifest)

    replace_dir_atomic(out, fill)
    return SplitResult({n: out / names[n] for n in SPLITS}, counts, unit_name, out / "split.json")


def _check_out(source: Path, out: Path, force: bool) -> None:
    """OUT must be a folder that is new, empty, or replaced on --force, and never the source or above it."""
    if out.exists() and not out.is_dir():
        raise UserError("output exists and is not a folder", out)
    resolved, src = out.resolve(), source.resolve()
    if resolved == src or resolved in src.parents:
        raise UserError("output folder would contain or replace the source; choose another", out)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError("output folder is not empty; use --force to replace it", out)


def _counts(units: list[_Unit]) -> dict[str, int]:
    total: dict[str, int] = {"units": len(units)}
    for unit in units:
        for key, n in unit.counts.items():
            total[key] = total.get(key, 0) + n
    return total


# ----------------------------------------------------------------------------- reading


def _read(source: Path, fmt: Format, by: By, order: Order) -> tuple[list[_Unit], str, dict[str, int], str]:
    """(units, source sha256, extra split.json keys, unit name), or a UserError naming file[:line]."""
    if fmt == "brat":
        if not source.is_dir():
            raise UserError("--format brat needs a folder of .txt and .ann files", source)
    elif not source.is_file():
        raise UserError(f"--format {fmt} needs a file, not a folder", source)
    if by == "sentence" and fmt not in _COLUMNS:
        kind = "BRAT documents" if fmt == "brat" else "JSONL records (by patient)"
        raise UserError(f"--by sentence applies to column files only (conll, conllu); {kind} are split by document",
                        source)
    if fmt == "brat":
        units, digest = _brat_units(source)
        return units, digest, {}, "document"
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    lines = _decoded_lines(source, data)
    if fmt == "jsonl":
        return _jsonl_units(source, lines), digest, {}, "patient"
    units, dropped = _column_units(source, lines, fmt, by, order)
    return units, digest, dropped, by


def _decoded_lines(path: Path, data: bytes) -> list[tuple[int, bytes, str]]:
    """(line number, raw bytes, text) per line; a leading BOM is left out (outputs are plain UTF-8)."""
    out = []
    for lineno, raw in enumerate(io.BytesIO(data.removeprefix(_BOM)), 1):
        try:
            out.append((lineno, raw, raw.decode("utf-8")))
        except UnicodeDecodeError:
            raise UserError("not valid UTF-8", path, lineno) from None
    return out


def _column_units(path: Path, lines: list[tuple[int, bytes, str]], fmt: Format, by: By,
                  order: Order) -> tuple[list[_Unit], dict[str, int]]:
    """Documents or sentences of a CoNLL or CoNLL-U file (see the module docstring) and, by sentence, the
    split.json counts of the document (and paragraph) marker lines dropped."""
    units: list[_Unit] = []
    current: _Unit | None = None
    pending: list[bytes] = []  # blank and comment lines not yet owned by a unit
    in_sentence, markers = False, {"newdoc": 0, "newpar": 0}
    conllu = fmt == "conllu"
    # sentences cut from their documents: drop the markers that would glue strangers into one document;
    # CoNLL-U sentences in source order keep them, so each split's documents read as in the source
    drop = by == "sentence" and (not conllu or order == "shuffle")

    def start(first: list[bytes]) -> _Unit:
        units.append(_Unit(len(units), first, counts={"sentences": 0, "tokens": 0}))
        return units[-1]

    def leading_comments() -> list[bytes]:
        """The pending lines from the first comment on: they introduce the next unit (a sentence's comments
        without the blank lines among them, which would read as sentence breaks)."""
        head = next((i for i, raw in enumerate(pending) if raw.strip()), len(pending))
        if current is not None:
            current.lines += pending[:head]
        return [raw for raw in pending[head:] if by == "document" or raw.strip()]

    for lineno, raw, text in lines:
        columns = text.split()
        marker = "" if conllu and in_sentence else _marker(text, columns, conllu)  # CoNLL-U: comments come first
        if not columns:
            if in_sentence or not conllu:  # CoNLL-U: one blank line after a sentence, extra ones dropped
                pending.append(raw)
            in_sentence = False
        elif marker:
            markers[marker] += 1
            in_sentence = False
            if marker == "newdoc" and by == "document":
                current = start([*leading_comments(), raw])
                pending = []
            elif not drop:
                pending.append(raw)
        elif text.startswith("#") and not in_sentence:
            pending.append(raw)
        else:
            is_token = _conllu_word(path, lineno, text) if conllu else not text.startswith("#")
            if not in_sentence and (current is None or by == "sentence"):
                current = start(leading_comments())
            elif current is not None:
                current.lines += pending
            pending = []
            assert current is not None
            current.lines.append(raw)  # a `#` line inside a conll sentence is kept but is no token
            current.counts["sentences"] += not in_sentence
            current.counts["tokens"] += is_token
            in_sentence = True
    if current is not None:
        current.lines += pending  # trailing comments stay with the last unit; blank lines are trimmed on writing
    if not any(u.counts["sentences"] for u in units):
        raise UserError(f"no sentences in this {'CoNLL-U' if conllu else 'column'} file", path)
    if by == "document" and markers["newdoc"] == 0:
        raise UserError(f"no {'# newdoc' if conllu else _DOCSTART} lines: the file is one document, which cannot "
                        f"be split; use --by sentence to split its sentences", path)
    if by == "document":
        return units, {}
    if not conllu:
        return units, {"docstart_lines_dropped": markers["newdoc"]}
    return units, {f"{name}_lines_dropped": n if drop else 0 for name, n in markers.items()}


def _marker(text: str, columns: list[str], conllu: bool) -> str:
    """"newdoc" for a line that opens a document (`-DOCSTART-`; `# newdoc` or `# newdoc id = ...` in CoNLL-U),
    "newpar" for a CoNLL-U `# newpar` line, "" for any other line."""
    if not conllu:
        return "newdoc" if columns and columns[0] == _DOCSTART else ""
    key = text[1:].split(maxsplit=1)[:1] if text.startswith("#") else []
    return key[0] if key in (["newdoc"], ["newpar"]) else ""


def _conllu_word(path: Path, lineno: int, text: str) -> bool:
    """Check a CoNLL-U token line and say whether it is a word: multiword ranges (`4-5`) and empty nodes (`5.1`)
    are copied but not counted, so `tokens` counts the lines a tagger labels."""
    if text.startswith("#"):
        raise UserError("comment line inside a sentence; CoNLL-U comments go before its first token line",
                        path, lineno)
    fields = text.rstrip("\r\n").split("\t")
    if len(fields) != 10:
        raise UserError(f"expected 10 tab-separated fields in a CoNLL-U token line, found {len(fields)}",
                        path, lineno)
    return fields[0].isascii() and fields[0].isdigit()


def _jsonl_units(path: Path, lines: list[tuple[int, bytes, str]]) -> list[_Unit]:
    """One unit per patient, in order of first appearance, holding that patient's records in source order."""
    patients: dict[str, _Unit] = {}
    for lineno, raw, text in lines:
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"not valid JSON ({exc.msg}, column {exc.colno})", path, lineno) from None
        if not isinstance(record, dict) or record.get("patient_id") in (None, ""):
            raise UserError("expected an object with a patient_id (records are split by patient)", path, lineno)
        key = str(record["patient_id"])
        unit = patients.setdefault(key, _Unit(key, counts={"records": 0}))
        unit.lines.append(raw)
        unit.counts["records"] += 1
    if not patients:
        raise UserError("no records in this JSONL file", path)
    return list(patients.values())


def _brat_units(folder: Path) -> tuple[list[_Unit], str]:
    """One unit per .txt (name order) with its .ann; the digest is sha256 over `sha256  name` lines of every
    .txt and .ann in name order (what `sha256sum` prints for them, sorted)."""
    texts = {p.stem for p in folder.glob("*.txt") if p.is_file()}
    if not texts:
        raise UserError("no .txt files in this BRAT folder", folder)
    for ann in sorted(folder.glob("*.ann")):
        if ann.stem not in texts:
            raise UserError(f"no {ann.stem}.txt beside this .ann file", ann)
    units, listing = [], []
    for stem in sorted(texts):
        unit = _Unit(stem)
        for path in (folder / f"{stem}.txt", folder / f"{stem}.ann"):
            if path.is_file():
                data = path.read_bytes()
                _decoded_lines(path, data)
                unit.files.append((path.name, data))
                listing.append(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
        units.append(unit)
    listing.sort(key=lambda line: line.split("  ", 1)[1])
    return units, hashlib.sha256("".join(listing).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- writing


def _text_bytes(units: list[_Unit], fmt: Format, newline: bytes) -> bytes:
    """JSONL records back to back; column units one blank line apart, CoNLL-U's also after the last (a CoNLL-U
    file ends with a blank line); a last line without a line ending gets `newline`."""
    pieces = []
    for unit in units:
        lines = list(unit.lines)
        while fmt in _COLUMNS and lines and not lines[-1].strip():
            lines.pop()
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += newline
        pieces.append(b"".join(lines))
    text = (newline if fmt in _COLUMNS else b"").join(pieces)
    return text + newline if fmt == "conllu" and pieces else text


def _newline(units: list[_Unit]) -> bytes:
    """The source's newline: CRLF if its first line ending is one, else LF."""
    for unit in units:
        for raw in unit.lines:
            if raw.endswith(b"\n"):
                return b"\r\n" if raw.endswith(b"\r\n") else b"\n"
    return b"\n"


def _write_brat(folder: Path, units: list[_Unit]) -> None:
    folder.mkdir()
    for unit in units:
        for name, data in unit.files:
            (folder / name).write_bytes(data)
