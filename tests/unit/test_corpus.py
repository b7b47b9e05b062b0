"""Corpus readers: every format streams the same tagged documents; bad input is one line naming file and
line (never the text), exit 2 through the real CLI, and leaves no shard behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from medtrain.cli import run
from medtrain.data.corpus import CorpusConfig, CorpusReader
from medtrain.data.tokenizer import train_wordpiece
from medtrain.errors import UserError

SECRET = "Ionescu Maria CNP 2850312"  # stands for patient text that must never reach a message
DOCS = ["Pacientul prezintă febră.", "El paciente presenta tos.\nSin fiebre.",
        "Patiënt heeft koorts [SEP] sinds gisteren."]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    train_wordpiece(DOCS * 5 + [SECRET], out, vocab_size=200)
    return out


def read(path: Path, on_decode_error: str = "fail", **fields: object) -> tuple[list, CorpusReader]:
    corpus = CorpusConfig(name="c", path=path, language="ro", domain="clinical", **fields)  # type: ignore[arg-type]
    reader = CorpusReader(corpus, path, on_decode_error)  # type: ignore[arg-type]
    return list(reader), reader


def test_every_format_streams_the_same_tagged_documents(tmp_path: Path) -> None:
    import datasets

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)), encoding="utf-8")
    paragraphs = tmp_path / "p.txt"
    paragraphs.write_text("\n\n".join(DOCS) + "\n", encoding="utf-8")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [0, 1, 2], "text": DOCS}), parquet, row_group_size=2)
    saved = tmp_path / "saved"
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(saved))

    for path, fields in [(jsonl, {}), (paragraphs, {"text_format": "paragraphs"}), (parquet, {}), (saved, {})]:
        docs, _ = read(path, **fields)
        assert [d.text for d in docs] == DOCS, path
        assert {(d.corpus, d.language, d.domain, d.path) for d in docs} == {("c", "ro", "clinical", str(path))}
    assert [d.line for d in read(jsonl)[0]] == [1, 2, 3]
    assert [d.line for d in read(paragraphs, text_format="paragraphs")[0]] == [1, 3, 6]
    assert [d.line for d in read(parquet)[0]] == [1, 2, 3]  # record numbers


def test_lines_skip_blank_lines_and_strip_line_ends_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffeen\r\n\n  \ntwee\nlaatste".encode())
    docs, _ = read(path)
    assert [(d.text, d.line) for d in docs] == [("een", 1), ("twee", 4), ("laatste", 5)]


def test_paragraphs_split_on_runs_of_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("\n\nA1\nA2\n\n \n\nB1\n", encoding="utf-8")
    docs, _ = read(path, text_format="paragraphs")
    assert [(d.text, d.line) for d in docs] == [("A1\nA2", 3), ("B1", 8)]


def test_undecodable_bytes_fail_by_default_and_skip_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"goed\n" + SECRET.encode() + b" \xff\xfe\nook goed\n")
    with pytest.raises(UserError) as info:
        read(path)
    assert info.value.format().startswith(f"{path}:2: not valid UTF-8") and SECRET not in info.value.format()
    docs, reader = read(path, "skip")
    assert [d.text for d in docs] == ["goed", "ook goed"] and reader.skipped == 1

    paragraphs = tmp_path / "p.txt"
    paragraphs.write_bytes(b"A1\n\xff\nA3\n\nB1\n")
    docs, reader = read(paragraphs, "skip", text_format="paragraphs")
    assert [d.text for d in docs] == ["B1"] and reader.skipped == 1  # a damaged paragraph goes whole

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n{"text": "\\ud800"}\n{"text": "b"}\n')
    docs, reader = read(jsonl, "skip")
    assert [d.text for d in docs] == ["a", "b"] and reader.skipped == 2


def test_undecodable_parquet_record_is_named_or_skipped(tmp_path: Path) -> None:
    texts = pa.array(["bun", SECRET, "tot bun"])
    data = bytearray(texts.buffers()[2].to_pybytes())
    data[len("bun") + 2] = 0xFF  # Arrow writes strings without checking them
    broken = pa.Array.from_buffers(pa.string(), 3, [None, texts.buffers()[1], pa.py_buffer(bytes(data))])
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": broken}), path)
    with pytest.raises(UserError) as info:
        read(path)
    assert info.value.format().startswith(f"{path}: record 2: not valid UTF-8") and "Ionescu" not in str(info.value)
    docs, reader = read(path, "skip")
    assert [(d.text, d.line) for d in docs] == [("bun", 1), ("tot bun", 3)] and reader.skipped == 1


def test_arrow_formats_name_the_missing_column_and_null_records(tmp_path: Path) -> None:
    import datasets

    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x", None]}), parquet)
    with pytest.raises(UserError, match="no 'text' column; set text_field to one of: body"):
        read(parquet)
    with pytest.raises(UserError, match="record 2: 'body' is null"):
        read(parquet, text_field="body")
    numbers = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    with pytest.raises(UserError, match="not strings"):
        read(numbers)
    datasets.disable_progress_bars()
    splits = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(splits))
    with pytest.raises(UserError, match="point path at one of them"):
        read(splits)
    assert [d.text for d in read(splits / "train")[0]] == ["a"]


def test_format_comes_from_the_suffix_or_the_config(tmp_path: Path) -> None:
    odd = tmp_path / "notes.data"
    odd.write_text('{"text": "a"}\n')
    with pytest.raises(UserError, match="set format to"):
        read(odd)
    assert [d.text for d in read(odd, format="jsonl")[0]] == ["a"]


# ----------------------------------------------------------------------------- bad input through the CLI


_GOOD = json.dumps({"text": DOCS[0]}).encode() + b"\n"
# name: (file content, None: no file; line the message must name, None: none; phrase; suffix; corpus fields)
BAD: dict[str, tuple[bytes | None, int | None, str, str, dict]] = {
    "missing": (None, None, "file not found", ".jsonl", {}),
    "empty": (b"", None, "file is empty", ".jsonl", {}),
    "blank": (b"\n  \n", None, "no documents", ".jsonl", {}),
    "undecodable_txt": (b"ok\n" + SECRET.encode() + b"\xc3\x28\n", 2, "not valid UTF-8", ".txt", {}),
    "undecodable_paragraph": (b"A\n\nB\n" + SECRET.encode() + b"\xff\n", 4, "not valid UTF-8", ".txt",
                              {"text_format": "paragraphs"}),
    "undecodable_jsonl": (_GOOD + b'{"text": "' + SECRET.encode() + b'\xff"}\n', 2, "not valid UTF-8", ".jsonl", {}),
    "not_json": (_GOOD + _GOOD + SECRET.encode() + b"\n", 3, "not valid JSON", ".jsonl", {}),
    "truncated_json": (_GOOD + b'{"text": "' + SECRET.encode() + b"\n", 2, "not valid JSON", ".jsonl", {}),
    "no_text_field": (_GOOD + json.dumps({"body": SECRET}).encode() + b"\n", 2, "got no such field", ".jsonl", {}),
    "text_not_string": (_GOOD + json.dumps({"text": [SECRET]}).encode() + b"\n", 2, "got a list", ".jsonl", {}),
    "not_an_object": (_GOOD + json.dumps([SECRET]).encode() + b"\n", 2, "expected a JSON object", ".jsonl", {}),
    "surrogate": (_GOOD + b'{"text": "' + SECRET.encode() + b'\\udc80"}\n', 2, "unpaired surrogate", ".jsonl", {}),
}


def _bad_corpus(tmp_path: Path, name: str) -> tuple[Path, dict]:
    content, _, _, suffix, fields = BAD[name]
    path = tmp_path / f"{name}{suffix}"
    if content is not None:
        path.write_bytes(content)
    return path, fields


def _write_config(tmp_path: Path, tokenizer_dir: Path, corpus: Path, **fields: object) -> Path:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": DOCS[0]}) + "\n", encoding="utf-8")
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({
        "tokenizer": str(tokenizer_dir), "output_dir": str(tmp_path / "shards"), "seq_len": 8, "num_workers": 0,
        # a good corpus first, so the bad one fails after shards were already written
        "corpora": [{"name": "good", "path": str(good), "language": "ro", "domain": "clinical"},
                    {"name": "bad", "path": str(corpus), "language": "ro", "domain": "clinical", **fields}]}))
    return config


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_naming_file_and_line(tmp_path: Path, tokenizer_dir: Path, name: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path, fields = _bad_corpus(tmp_path, name)
    _, line, phrase, _, _ = BAD[name]
    config = _write_config(tmp_path, tokenizer_dir, path, **fields)
    assert run(["prepare", str(config)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    where = f"{path}:{line}:" if line else f"{path}:"
    assert lines[0].startswith(f"error: {where}") and phrase in lines[0], lines[0]
    assert SECRET not in err and "Ionescu" not in err and "Traceback" not in err
    assert not (tmp_path / "shards").exists()
    assert not list(tmp_path.glob("shards.tmp-*")), "a failed prepare removes its partial output"


def test_skip_switch_drops_undecodable_documents_with_a_warning(tmp_path: Path, tokenizer_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, fields = _bad_corpus(tmp_path, "undecodable_txt")
    config = _write_config(tmp_path, tokenizer_dir, path, **fields)
    assert run(["prepare", str(config), "on_decode_error=skip"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 documents with undecodable bytes" in err and SECRET not in err
    assert (tmp_path / "shards" / "manifest.json").is_file()


def test_the_installed_command_reports_bad_input_without_traceback(tmp_path: Path, tokenizer_dir: Path) -> None:
    path, fields = _bad_corpus(tmp_path, "not_json")
    config = _write_config(tmp_path, tokenizer_dir, path, **fields)
    medtrain = Path(sys.executable).with_name("medtrain")
    result = subprocess.run([str(medtrain), "prepare", str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}:3: not valid JSON (Expecting value at column 1)"
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "shards").exists()
