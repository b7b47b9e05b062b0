"""prepare(): packed sequences decode back to every document, in order, in any input format; no padding;
a deterministic validation split; a killed prepare leaves nothing complete; verify catches damage."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from medtrain.cli import run
from medtrain.config import load_config
from medtrain.data.pack import PrepareConfig, _held_out, _split_key, prepare
from medtrain.data.shards import Manifest, open_shard, read_manifest
from medtrain.data.tokenizer import load_tokenizer, train_wordpiece
from medtrain.errors import UserError

WORDS = {
    "nl": "patiënt heeft koorts en hoest sinds drie dagen opname ziekenhuis medicatie bloeddruk".split(),
    "ro": "pacientul prezintă febră și tuse de trei zile internare spital tratament tensiune".split(),
    "es": "el paciente presenta fiebre y tos desde hace tres días ingreso hospital tratamiento".split(),
}


def make_documents(count: int = 120, seed: int = 0) -> list[str]:
    """Unique single-line documents of 1..60 words; a few hold literal special-token strings."""
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        words = WORDS[("nl", "ro", "es")[i % 3]]
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        docs.append(f"{text} nota{i}")
    docs[5] = "Pacientul [SEP] nu răspunde [CLS] la tratament [PAD] [MASK] nota5"
    docs[6] = "[SEP]"
    return docs


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    train_wordpiece(make_documents(), out, vocab_size=300)
    return out


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


def config(tmp_path: Path, tokenizer_dir: Path, corpora: list[dict], **fields: object) -> PrepareConfig:
    """A PrepareConfig built the way the CLI builds it, from YAML."""
    data = {"tokenizer": str(tokenizer_dir), "output_dir": str(tmp_path / "shards"), "seq_len": 16,
            "shard_size_mb": 0.001, "num_workers": 0, "validation_fraction": 0.2, "corpora": corpora, **fields}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "prepare.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(PrepareConfig, path)


def corpus(name: str, path: Path, **fields: object) -> dict:
    return {"name": name, "path": str(path), "language": "ro", "domain": "clinical", **fields}


def expected_ids(tokenizer_dir: Path, docs: list[str]) -> list[list[int]]:
    """Token ids as transformers gives them with special-token strings kept as text."""
    tok = load_tokenizer(tokenizer_dir)
    return tok(docs, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def split_rows(out: Path, manifest: Manifest, split: str, corpus_name: str) -> np.ndarray:
    shards = manifest.shards_of(split, corpus_name)
    if not shards:
        return np.empty((0, manifest.seq_len), dtype=manifest.np_dtype)
    return np.concatenate([np.asarray(open_shard(out, manifest, s)) for s in shards])


def decode(rows: np.ndarray, manifest: Manifest) -> list[int]:
    """Rows -> content stream, after checking the row invariants (no padding, [CLS] first, exact length)."""
    ids = manifest.special_ids
    assert rows.shape[1] == manifest.seq_len
    assert (rows[:, 0] == ids["cls"]).all()
    assert not (rows == ids["pad"]).any()
    assert not (rows[:, 1:] == ids["cls"]).any()
    return rows[:, 1:].reshape(-1).tolist()


def check_round_trip(out: Path, manifest: Manifest, name: str, docs: list[list[int]], tail: str) -> None:
    """Walking the corpus in order, each document is the next one in the train or the validation stream."""
    sep, width = manifest.special_ids["sep"], manifest.seq_len - 1
    streams = {split: decode(split_rows(out, manifest, split, name), manifest) for split in ("train", "validation")}
    pos = dict.fromkeys(streams, 0)
    content: dict[str, list[int]] = {split: [] for split in streams}
    unmatched = []
    for doc in docs:
        piece = doc + [sep]
        split = next((s for s in streams if streams[s][pos[s]: pos[s] + len(piece)] == piece), None)
        if split is None:
            unmatched.append(piece)
            continue
        pos[split] += len(piece)
        content[split] += piece
    rests = {split: stream[pos[split]:] for split, stream in streams.items()}
    for split, stream in streams.items():
        assert len(stream) % width == 0
        if tail == "wrap":  # what follows the last document is the split's start again, less than a row
            cycles = width // max(1, len(content[split])) + 1
            assert len(rests[split]) < width and rests[split] == (content[split] * cycles)[: len(rests[split])]
    if tail == "wrap":
        assert not unmatched
    else:  # drop: per split, less than one row of tokens is lost from the end
        assert sum(map(len, unmatched)) - sum(map(len, rests.values())) < 2 * width


@pytest.mark.parametrize("tail", ["wrap", "drop"])
def test_round_trip_recovers_every_document(tmp_path: Path, tokenizer_dir: Path, tail: str) -> None:
    docs = make_documents()
    cfg = config(tmp_path, tokenizer_dir, [corpus("notes", write_jsonl(tmp_path / "notes.jsonl", docs))], tail=tail)
    manifest = prepare(cfg)
    ids = expected_ids(tokenizer_dir, docs)
    assert manifest.shards_of("validation"), "fixture should give a validation split"
    assert len(manifest.shards_of("train")) > 1, "fixture should give several shards"
    check_round_trip(cfg.output_dir, manifest, "notes", ids, tail)


def test_exact_documents_in_order_with_literal_special_strings(tmp_path: Path, tokenizer_dir: Path) -> None:
    """No validation split and wrap: the stream is exactly doc [SEP] doc [SEP] ... then the start again."""
    docs = make_documents()
    cfg = config(tmp_path, tokenizer_dir, [corpus("notes", write_jsonl(tmp_path / "n.jsonl", docs))],
                 validation_fraction=0.0)
    manifest = prepare(cfg)
    ids = expected_ids(tokenizer_dir, docs)
    sep = manifest.special_ids["sep"]
    assert all(sep not in d and d for d in ids), "literal [SEP] text must not become the separator"
    content = [t for d in ids for t in d + [sep]]
    stream = decode(split_rows(cfg.output_dir, manifest, "train", "notes"), manifest)
    assert stream[: len(content)] == content
    assert stream[len(content):] == content[: len(stream) - len(content)]
    assert len(stream) - len(content) < 15
    info = manifest.corpora[0]
    assert (info.documents, info.tokens, info.validation_sequences) == (len(docs), sum(map(len, ids)), 0)
    assert manifest.shards_of("validation") == []


def test_drop_discards_only_the_last_partial_sequence(tmp_path: Path, tokenizer_dir: Path) -> None:
    docs = make_documents()
    cfg = config(tmp_path, tokenizer_dir, [corpus("notes", write_jsonl(tmp_path / "n.jsonl", docs))],
                 validation_fraction=0.0, tail="drop")
    manifest = prepare(cfg)
    sep = manifest.special_ids["sep"]
    content = [t for d in expected_ids(tokenizer_dir, docs) for t in d + [sep]]
    stream = decode(split_rows(cfg.output_dir, manifest, "train", "notes"), manifest)
    assert stream == content[: len(content) // 15 * 15]


def test_a_split_shorter_than_one_sequence_wraps_around(tmp_path: Path, tokenizer_dir: Path) -> None:
    cfg = config(tmp_path, tokenizer_dir, [corpus("tiny", write_jsonl(tmp_path / "t.jsonl", ["febră"]))],
                 validation_fraction=0.0, seq_len=8)
    manifest = prepare(cfg)
    rows = split_rows(cfg.output_dir, manifest, "train", "tiny")
    tok = expected_ids(tokenizer_dir, ["febră"])[0] + [manifest.special_ids["sep"]]
    assert rows.shape == (1, 8)
    assert decode(rows, manifest) == (tok * 8)[:7]


def test_every_input_format_gives_identical_shards(tmp_path: Path, tokenizer_dir: Path) -> None:
    import datasets

    docs = make_documents(60)
    paragraphs = [d.replace(" hoest ", "\nhoest ").replace(" tuse ", "\ntuse ") for d in docs]
    files = {
        "jsonl": write_jsonl(tmp_path / "c.jsonl", paragraphs),
        "lines": tmp_path / "lines.txt",
        "paragraphs": tmp_path / "paragraphs.txt",
        "parquet": tmp_path / "c.parquet",
        "saved": tmp_path / "saved",
    }
    files["lines"].write_text("\n".join(d.replace("\n", " ") for d in paragraphs) + "\n", encoding="utf-8")
    files["paragraphs"].write_text("\n\n\n".join(paragraphs) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": paragraphs}), files["parquet"], row_group_size=7)
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"text": paragraphs}).save_to_disk(str(files["saved"]))

    checksums = {}
    for kind, path in files.items():
        extra = {"text_format": kind} if kind in ("lines", "paragraphs") else {}
        manifest = prepare(config(tmp_path / f"run-{kind}", tokenizer_dir, [corpus("c", path, **extra)]))
        checksums[kind] = [(s.path, s.sha256) for s in manifest.shards]
    # newlines are whitespace to the tokenizer, so one-per-line and blank-line formats agree too
    assert len({tuple(v) for v in checksums.values()}) == 1, checksums


def test_split_and_shards_do_not_depend_on_batching_or_workers(tmp_path: Path, tokenizer_dir: Path) -> None:
    docs = make_documents(300, seed=1)
    path = write_jsonl(tmp_path / "c.jsonl", docs)
    a = prepare(config(tmp_path / "a", tokenizer_dir, [corpus("c", path)], batch_size=1000))
    b = prepare(config(tmp_path / "b", tokenizer_dir, [corpus("c", path)], batch_size=7, num_workers=2))
    c = prepare(config(tmp_path / "c", tokenizer_dir, [corpus("c", path)], seed=1))
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    assert a.corpora[0].documents != c.corpora[0].documents or a.shards != c.shards  # another seed, another split


def test_validation_fraction_is_roughly_kept() -> None:
    for fraction in (0.01, 0.1, 0.3):
        held = _held_out(_split_key(0, "nl_clinical"), 0, 200_000, fraction)
        assert abs(held.mean() - fraction) < 0.005
        # the same call gives the same split; another corpus name gives another one
        assert np.array_equal(held, _held_out(_split_key(0, "nl_clinical"), 0, 200_000, fraction))
        assert not np.array_equal(held, _held_out(_split_key(0, "ro_clinical"), 0, 200_000, fraction))
    assert not _held_out(_split_key(0, "x"), 0, 1000, 0.0).any()


def test_manifest_records_tokenizer_and_counts(tmp_path: Path, tokenizer_dir: Path) -> None:
    docs = make_documents()
    cfg = config(tmp_path, tokenizer_dir, [corpus("a", write_jsonl(tmp_path / "a.jsonl", docs), weight=2.0),
                                           corpus("b", write_jsonl(tmp_path / "b.jsonl", docs[:50]))])
    manifest = prepare(cfg)
    assert read_manifest(cfg.output_dir) == manifest
    assert manifest.vocab_size == len(load_tokenizer(tokenizer_dir)) and manifest.dtype == "<u2"
    assert manifest.seq_len == 16
    assert set(manifest.special_ids) >= {"cls", "sep", "pad", "mask"}
    assert [(c.name, c.weight) for c in manifest.corpora] == [("a", 2.0), ("b", 1.0)]
    for info in manifest.corpora:
        assert info.sequences == sum(s.sequences for s in manifest.shards_of("train", info.name))
        assert info.validation_sequences == sum(s.sequences for s in manifest.shards_of("validation", info.name))
    assert (cfg.output_dir / "config.yaml").is_file()
    assert run(["prepare", "--verify", str(cfg.output_dir)]) == 0


def test_rerun_is_a_no_op_and_a_different_config_needs_overwrite(tmp_path: Path, tokenizer_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", make_documents())
    cfg = config(tmp_path, tokenizer_dir, [corpus("c", path)])
    first = prepare(cfg)
    stamp = (cfg.output_dir / "manifest.json").stat().st_mtime_ns
    assert prepare(config(tmp_path, tokenizer_dir, [corpus("c", path)], num_workers=1, batch_size=3)) == first
    assert "nothing to do" in capsys.readouterr().out
    assert (cfg.output_dir / "manifest.json").stat().st_mtime_ns == stamp

    with pytest.raises(UserError, match="overwrite=true"):
        prepare(config(tmp_path, tokenizer_dir, [corpus("c", path)], seq_len=32))
    assert read_manifest(cfg.output_dir) == first
    second = prepare(config(tmp_path, tokenizer_dir, [corpus("c", path)], seq_len=32, overwrite=True))
    assert second.seq_len == 32 and read_manifest(cfg.output_dir) == second
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("shards")) == ["shards"]


def test_refuses_an_output_dir_holding_other_files(tmp_path: Path, tokenizer_dir: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "notes.txt").write_text("mine")
    cfg = config(tmp_path, tokenizer_dir, [corpus("c", write_jsonl(tmp_path / "c.jsonl", ["febră"]))], overwrite=True)
    with pytest.raises(UserError, match="did not write"):
        prepare(cfg)
    assert (tmp_path / "shards" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("override, fix", [
    ("corpora.0.weight=0", "weight must be a positive number"),
    ("corpora.0.weight=-1", "weight must be a positive number"),
    ("seq_len=4", "seq_len must be between"),
    ("seq_len=100000", "seq_len must be between"),
    ("validation_fraction=0.5", "validation_fraction must be in"),
    ("corpora.1.name=a", "repeated: a"),
    ("shard_size_mb=0", "shard_size_mb must be a positive"),
    ("tail=pad", "must be one of 'wrap', 'drop'"),
    ("corpora.0.name=a/b", "must be letters"),
])
def test_config_validation_names_the_fix(tmp_path: Path, override: str, fix: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prepare.yaml"
    path.write_text(yaml.safe_dump({"tokenizer": "tok", "output_dir": "out", "corpora": [
        {"name": "a", "path": "a.jsonl", "language": "nl", "domain": "clinical"},
        {"name": "b", "path": "b.jsonl", "language": "nl", "domain": "clinical"}]}))
    assert run(["prepare", str(path), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}") and fix in err[0], err


def test_verify_names_a_corrupted_or_truncated_shard(tmp_path: Path, tokenizer_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, tokenizer_dir, [corpus("c", write_jsonl(tmp_path / "c.jsonl", make_documents()))])
    manifest = prepare(cfg)
    out = cfg.output_dir
    assert run(["prepare", "--verify", str(out)]) == 0
    capsys.readouterr()

    flipped = out / manifest.shards[1].path
    data = bytearray(flipped.read_bytes())
    data[3] ^= 0x01
    flipped.write_bytes(bytes(data))
    assert run(["prepare", "--verify", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(flipped) in err[0] and "corrupted" in err[0], err

    flipped.write_bytes(bytes(data[:-2]))
    assert run(["prepare", "--verify", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(flipped) in err[0] and "truncated" in err[0], err


def test_killed_prepare_leaves_nothing_complete_and_rerun_matches(tmp_path: Path, tokenizer_dir: Path) -> None:
    docs = make_documents(4000, seed=2)
    cfg_path = tmp_path / "prepare.yaml"
    out = tmp_path / "shards"
    cfg_path.write_text(yaml.safe_dump({
        "tokenizer": str(tokenizer_dir), "output_dir": str(out), "seq_len": 16, "shard_size_mb": 0.0005,
        "num_workers": 1, "batch_size": 50,
        "corpora": [corpus("c", write_jsonl(tmp_path / "c.jsonl", docs))]}))
    medtrain = [sys.executable, "-m", "medtrain.cli", "prepare", str(cfg_path)]
    proc = subprocess.Popen(medtrain, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while not any(tmp_path.glob("shards.tmp-*/train/c/shard-*.bin")):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "prepare never started writing"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the prepare and its tokenizer workers
        proc.wait()
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.bin"))
    assert list(tmp_path.glob("shards.tmp-*")), "the killed run's partial folder should be left behind"

    assert subprocess.run(medtrain, capture_output=True, timeout=120).returncode == 0
    assert not list(tmp_path.glob("shards.tmp-*")), "a rerun removes what the killed run left"
    rerun = read_manifest(out)
    clean = prepare(load_config(PrepareConfig, cfg_path, [f"output_dir={tmp_path / 'clean'}", "num_workers=0"]))
    assert [(s.path, s.sha256) for s in rerun.shards] == [(s.path, s.sha256) for s in clean.shards]
    assert run(["prepare", "--verify", str(out)]) == 0
