"""Screening records: notes grouped by patient, read from JSONL or CSV, cut into model-sized windows.

A record is one note: `patient_id`, `text`, `label` (0/1, the patient's label, repeated on each of their
notes) and optionally `note_id`. JSONL has one object per line; CSV has a header row naming the columns.
Errors say file:line and what is wrong, never the note's text (nor the patient id: it may identify someone).

A note longer than the model's window becomes several windows of at most `max_length` tokens, each opened by
[CLS] and closed by [SEP]; consecutive windows share `stride` tokens, so every token is seen at least once
and a sentence cut at a window's edge is seen whole in the next. The model scores windows; a patient's score
aggregates the scores of all windows of all their notes (`ScreeningConfig.aggregate`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from medtrain.errors import UserError

REQUIRED_FIELDS = ("patient_id", "text", "label")
_CSV_FIELD_LIMIT = 1 << 26  # 64 MiB: a long note in one CSV cell is fine, csv's 128 KiB default is not
STRIDE = 128
"""The overlap of the Hugging Face examples for long inputs (their doc_stride), and screening.stride's default
wherever the window is longer than that."""


def default_stride(max_length: int) -> int:
    """screening.stride when unset: STRIDE where the window's content (max_length - 2) is longer than it, as it
    always was; else half the content, so a short window still advances by half of itself."""
    content = max_length - 2
    return STRIDE if STRIDE < content else content // 2


@dataclasses.dataclass
class ScreeningConfig:
    """How long notes are windowed, how window scores become patient scores, and how imbalance is handled."""

    stride: int | None = None
    """Tokens shared by consecutive windows of a long note (the Hugging Face tokenizers' sense of `stride`, not
    the step): with max_length 512 and stride 128 a window starts every 510 - 128 = 382 tokens. Unset: 128 when
    the window's content (train.max_length - 2) is longer, else half the content (max_length 128 -> 63), so the
    defaults always form a valid config; the config is resolved with the number."""
    aggregate: Literal["max", "mean"] = "max"
    """Patient score from their window scores. Default max: a positive patient's evidence sits in a few
    sentences of a few notes among many ordinary ones, and a mean dilutes it with every uneventful window."""
    class_weights: bool = True
    """Weight the loss by inverse class frequency of the training windows (the sample data is ~15% positive),
    so the rare class is not ignored."""

    def __post_init__(self) -> None:
        if self.stride is not None and self.stride < 0:
            raise ValueError("screening.stride must be >= 0 (tokens shared by consecutive windows)")


@dataclasses.dataclass(frozen=True)
class Note:
    patient_id: str
    note_id: str
    text: str
    label: int


@dataclasses.dataclass
class EncodedSplit:
    """Windows of one split, and the patients they belong to (patients in order of first appearance)."""

    patient_ids: list[str]
    labels: list[int]
    windows: list[list[int]]
    window_patient: list[int]
    notes: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EncodedSplit:
        return cls(**data)


# ----------------------------------------------------------------------------- reading


def read_notes(path: str | Path, fmt: Literal["jsonl", "csv"]) -> list[Note]:
    """All notes of a JSONL or CSV file, checked: required fields, label 0/1, one label per patient."""
    path = Path(path)
    if not path.is_file():
        raise UserError("screening file not found", path)
    rows = _jsonl_rows(path) if fmt == "jsonl" else _csv_rows(path)
    notes: list[Note] = []
    first_line: dict[str, tuple[int, int]] = {}  # patient -> (line, label)
    counters: dict[str, int] = {}
    try:
        for line, record in rows:
            note = _note(record, path, line, counters)
            seen = first_line.setdefault(note.patient_id, (line, note.label))
            if seen[1] != note.label:
                raise UserError(f"conflicting labels for one patient: label {note.label} here, {seen[1]} at line "
                                f"{seen[0]} (a patient's label must be the same on every note)", path, line)
            notes.append(note)
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", path) from None
    if not notes:
        raise UserError("no screening records in this file", path)
    return notes


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UserError(f"not valid JSON ({exc.msg}, column {exc.colno})", path, line) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [name for name in REQUIRED_FIELDS if name not in columns]
        if missing:
            raise UserError(f"CSV header lacks column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})",
                            path, 1)
        start = reader.line_num + 1
        try:
            for row in reader:
                yield start, row
                start = reader.line_num + 1
        except csv.Error as exc:
            raise UserError(f"malformed CSV ({exc})", path, reader.line_num) from None


def _note(record: Any, path: Path, line: int, counters: dict[str, int]) -> Note:
    """One checked record; a missing note_id becomes `<patient_id>-<n>` (n counts that patient's notes)."""
    if not isinstance(record, dict):
        raise UserError("expected an object with patient_id, text and label", path, line)
    for name in REQUIRED_FIELDS:
        if record.get(name) is None or (name != "text" and record[name] == ""):
            raise UserError(f"missing field {name!r}", path, line)
    if not isinstance(record["text"], str):
        raise UserError("field 'text' must be a string", path, line)
    label = record["label"]
    if isinstance(label, bool) or label not in (0, 1, "0", "1"):
        raise UserError("field 'label' must be 0 or 1", path, line)
    patient = str(record["patient_id"])
    counters[patient] = counters.get(patient, 0) + 1
    note_id = record.get("note_id") or f"{patient}-{counters[patient]}"
    return Note(patient, str(note_id), record["text"], int(label))


# ----------------------------------------------------------------------------- windows


def window_spans(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) token ranges covering `n_tokens`, each at most max_length - 2 long (room for [CLS] and
    [SEP]), consecutive ones sharing `stride` tokens; an empty note gives one empty window."""
    content = max_length - 2
    if content < 1 or not 0 <= stride < content:
        raise ValueError(f"windows need max_length >= 3 and 0 <= stride < max_length - 2 "
                         f"(got max_length {max_length}, stride {stride})")
    starts = [0]
    while starts[-1] + content < n_tokens:
        starts.append(starts[-1] + content - stride)
    return [(s, min(s + content, n_tokens)) for s in starts]


def encode_notes(notes: Sequence[Note], tokenizer: Any, max_length: int, stride: int) -> EncodedSplit:
    """Tokenize every note once and cut it into [CLS] window [SEP] sequences, grouped by patient."""
    ids = tokenizer([n.text for n in notes], add_special_tokens=False, verbose=False)["input_ids"] if notes else []
    patients: dict[str, int] = {}
    labels: list[int] = []
    windows: list[list[int]] = []
    window_patient: list[int] = []
    for note, tokens in zip(notes, ids):
        index = patients.setdefault(note.patient_id, len(patients))
        if index == len(labels):
            labels.append(note.label)
        for start, end in window_spans(len(tokens), max_length, stride):
            windows.append([tokenizer.cls_token_id, *tokens[start:end], tokenizer.sep_token_id])
            window_patient.append(index)
    return EncodedSplit(list(patients), labels, windows, window_patient, len(notes))


# ----------------------------------------------------------------------------- scores and weights


def aggregate_scores(window_scores: Sequence[float], window_patient: Sequence[int], n_patients: int,
                     how: Literal["max", "mean"]) -> list[float]:
    """One score per patient from the scores of their windows (every patient has at least one window)."""
    totals, counts, best = [0.0] * n_patients, [0] * n_patients, [-math.inf] * n_patients
    for score, owner in zip(window_scores, window_patient, strict=True):
        if not 0 <= owner < n_patients:
            raise ValueError("every window needs a patient")
        totals[owner] += float(score)  # a running sum in window order: the same float on every Python version
        counts[owner] += 1
        best[owner] = max(best[owner], float(score))
    if not all(counts):
        raise ValueError("every patient needs at least one window")
    return best if how == "max" else [total / count for total, count in zip(totals, counts)]


def class_weights(labels: Sequence[int]) -> list[float]:
    """Inverse-frequency weights n / (2 * n_c) for classes 0 and 1; [1, 1] when a class is absent (nothing to
    balance)."""
    counts = [sum(1 for label in labels if label == c) for c in (0, 1)]
    if not all(counts):
        return [1.0, 1.0]
    return [len(labels) / (2 * c) for c in counts]
