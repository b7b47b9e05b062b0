"""Screening records: reading with clear errors, windowing long notes, patient scores, class weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtrain.data import documents
from medtrain.errors import UserError

SECRET = "Patient reports SECRET_TEXT"  # must never appear in an error message


class WordTokenizer:
    """Stands in for a fast tokenizer: one id per whitespace word (10 + position in the note)."""

    cls_token_id, sep_token_id = 1, 2

    def __call__(self, texts: list[str], add_special_tokens: bool, verbose: bool) -> dict[str, list[list[int]]]:
        assert not add_special_tokens
        return {"input_ids": [[10 + i for i, _ in enumerate(text.split())] for text in texts]}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- windows


def test_window_spans_by_hand() -> None:
    # 10 tokens, 4 per window (6 minus [CLS] and [SEP]), 1 shared: starts 0, 3, 6
    assert documents.window_spans(10, max_length=6, stride=1) == [(0, 4), (3, 7), (6, 10)]
    assert documents.window_spans(4, max_length=6, stride=1) == [(0, 4)]
    assert documents.window_spans(0, max_length=6, stride=1) == [(0, 0)]


@pytest.mark.parametrize("n_tokens", [1, 5, 37, 510, 511, 1000, 1337])
@pytest.mark.parametrize("max_length, stride", [(512, 128), (128, 0), (64, 61), (16, 7)])
def test_windows_cover_every_token_with_the_configured_overlap(n_tokens: int, max_length: int, stride: int) -> None:
    spans = documents.window_spans(n_tokens, max_length, stride)
    covered = set().union(*(range(s, e) for s, e in spans))
    assert covered == set(range(n_tokens))
    assert spans[0][0] == 0 and spans[-1][1] == n_tokens
    assert all(e - s <= max_length - 2 for s, e in spans)
    assert all(prev[1] - cur[0] == stride for prev, cur in zip(spans, spans[1:]))


def test_window_spans_rejects_an_impossible_stride() -> None:
    with pytest.raises(ValueError, match="stride"):
        documents.window_spans(100, max_length=10, stride=8)


def test_encode_notes_windows_and_patients() -> None:
    notes = [documents.Note("p1", "p1-1", " ".join(["w"] * 9), 1), documents.Note("p2", "p2-1", "a b", 0),
             documents.Note("p1", "p1-2", "", 1)]
    encoded = documents.encode_notes(notes, WordTokenizer(), max_length=6, stride=2)
    assert encoded.patient_ids == ["p1", "p2"] and encoded.labels == [1, 0] and encoded.notes == 3
    # note 1: 9 tokens, 4 per window sharing 2 -> starts 0, 2, 4 (ends 4, 6, 8), 6 (ends 9)
    assert encoded.window_patient == [0, 0, 0, 0, 1, 0]
    assert encoded.windows[0] == [1, 10, 11, 12, 13, 2]
    assert encoded.windows[3] == [1, 16, 17, 18, 2]
    assert encoded.windows[4] == [1, 10, 11, 2] and encoded.windows[5] == [1, 2]  # an empty note: one window
    assert all(w[0] == 1 and w[-1] == 2 and len(w) <= 6 for w in encoded.windows)
    assert documents.EncodedSplit.from_json(json.loads(json.dumps(encoded.to_json()))) == encoded


# ----------------------------------------------------------------------------- scores and weights


def test_aggregate_scores() -> None:
    scores, owner = [0.1, 0.9, 0.3, 0.5], [0, 0, 1, 1]
    assert documents.aggregate_scores(scores, owner, 2, "max") == pytest.approx([0.9, 0.5])
    assert documents.aggregate_scores(scores, owner, 2, "mean") == pytest.approx([0.5, 0.4])
    with pytest.raises(ValueError, match="at least one window"):
        documents.aggregate_scores(scores, owner, 3, "max")


def test_class_weights() -> None:
    assert documents.class_weights([0, 0, 0, 1]) == pytest.approx([4 / 6, 2.0])
    assert documents.class_weights([0, 0]) == pytest.approx([1.0, 1.0])  # one class only: nothing to balance


def test_config_rejects_a_negative_stride() -> None:
    with pytest.raises(ValueError, match="stride"):
        documents.ScreeningConfig(stride=-1)


# ----------------------------------------------------------------------------- reading


def test_read_jsonl_and_default_note_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"patient_id": 7, "text": "x", "label": 1},
                                              {"patient_id": "7", "text": "y", "label": "1", "note_id": "n2"},
                                              {"patient_id": "8", "text": "", "label": 0}])
    notes = documents.read_notes(path, "jsonl")
    assert [(n.patient_id, n.note_id, n.label) for n in notes] == [("7", "7-1", 1), ("7", "n2", 1), ("8", "8-1", 0)]


def test_read_csv_with_multiline_text(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('patient_id,label,text\np1,0,"line one\nline two"\np2,1,plain\n', encoding="utf-8")
    notes = documents.read_notes(path, "csv")
    assert [(n.patient_id, n.text, n.label) for n in notes] == [("p1", "line one\nline two", 0), ("p2", "plain", 1)]


@pytest.mark.parametrize("records, message", [
    ([{"patient_id": "p", "text": SECRET, "label": 1}, {"patient_id": "q", "text": SECRET}],
     r"a\.jsonl:2: missing field 'label'"),
    ([{"patient_id": "p", "text": SECRET, "label": 2}], r"a\.jsonl:1: field 'label' must be 0 or 1"),
    ([{"patient_id": "p", "text": SECRET, "label": True}], r"a\.jsonl:1: field 'label' must be 0 or 1"),
    ([{"text": SECRET, "label": 0}], r"a\.jsonl:1: missing field 'patient_id'"),
    ([{"patient_id": "p", "text": SECRET, "label": 1}, {"patient_id": "q", "text": SECRET, "label": 0},
      {"patient_id": "p", "text": SECRET, "label": 0}], r"a\.jsonl:3: conflicting labels .* at line 1"),
    ([["p", SECRET, 1]], r"a\.jsonl:1: expected an object"),
])
def test_bad_records_name_file_and_line_never_the_text(tmp_path: Path, records: list, message: str) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", records)
    with pytest.raises(UserError, match=message) as info:
        documents.read_notes(path, "jsonl")
    assert "SECRET" not in str(info.value) and "'p'" not in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        documents.read_notes(tmp_path / "missing.jsonl", "jsonl")
    (tmp_path / "bad.jsonl").write_text('{"patient_id": "p", "text": "x", "label": 1}\n{"patient_id": SECRET\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON") as info:
        documents.read_notes(tmp_path / "bad.jsonl", "jsonl")
    assert "SECRET" not in str(info.value)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no screening records"):
        documents.read_notes(tmp_path / "empty.jsonl", "jsonl")
    (tmp_path / "cols.csv").write_text("patient_id,text\np,x\n")
    with pytest.raises(UserError, match=r"cols\.csv:1: CSV header lacks column\(s\) label"):
        documents.read_notes(tmp_path / "cols.csv", "csv")
    (tmp_path / "latin.jsonl").write_bytes(b'{"patient_id": "p", "text": "\xe9", "label": 1}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        documents.read_notes(tmp_path / "latin.jsonl", "jsonl")


def test_csv_errors_point_at_the_record_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('patient_id,label,text\np1,0,"two\nlines"\np2,maybe,x\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"a\.csv:4: field 'label' must be 0 or 1"):
        documents.read_notes(path, "csv")
