"""`medtrain split`: column and CoNLL-U files by document and by sentence, BRAT folders, JSONL by patient; lines
copied byte for byte, no unit in two splits, ratios respected, the same bytes for the same inputs, and bad input
that names the file (and line), exits 2, never quotes the corpus and leaves nothing behind."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import conllu
import pytest

from medtrain.cli import run
from medtrain.data.split import detect_format, split_sizes

SECRET = "Popescu Ion CNP 1850101"  # stands for patient text that must never reach a message


def split(*args: object) -> int:
    return run(["split", *map(str, args)])


def manifest(out: Path) -> dict:
    return json.loads((out / "split.json").read_text(encoding="utf-8"))


def nonblank_lines(data: bytes) -> Counter[bytes]:
    return Counter(line for line in data.splitlines(keepends=True) if line.strip())


def column_documents(n: int) -> list[bytes]:
    """n documents, each with a comment, a -DOCSTART- line and d % 3 + 1 sentences of tokens naming the document."""
    docs = []
    for d in range(n):
        sentences = ["".join(f"d{d}s{s}w{w}\tlemma\t{'B-CHEM' if w == 0 else 'O'}\tNOUN\n" for w in range(s + 2))
                     for s in range(d % 3 + 1)]
        docs.append(("# document %d\n-DOCSTART- -X- O O\n\n" % d + "\n".join(sentences)).encode())
    return docs


def sentences_file(n: int, newline: str = "\n") -> list[bytes]:
    """n sentences with no -DOCSTART- (one MoNERo-style document), one with a comment, one with a 2-column line."""
    units = []
    for s in range(n):
        lines = [f"# sent {s}"] if s == 3 else []
        lines += [f"s{s}w{w}\tl\t{'B-DISO' if w == 0 else 'I-DISO'}\tN" for w in range(s % 4 + 1)]
        if s == 5:
            lines.append(f"s{s}short\tO")
        units.append("".join(line + newline for line in lines).encode())
    return units


def files_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- sizes


def test_split_sizes_round_and_give_every_nonzero_split_a_unit() -> None:
    assert split_sizes(10, (0.8, 0.1, 0.1)) == (8, 1, 1)
    assert split_sizes(3, (0.8, 0.1, 0.1)) == (1, 1, 1)
    assert split_sizes(7, (1.0, 0.0, 0.0)) == (7, 0, 0)
    assert split_sizes(25, (0.7, 0.15, 0.15)) == (17, 4, 4)  # 3.75 -> 4
    for n in range(3, 60):
        for ratios in [(0.8, 0.1, 0.1), (0.0, 0.5, 0.5), (0.34, 0.33, 0.33), (0.98, 0.01, 0.01)]:
            sizes = split_sizes(n, ratios)
            assert sum(sizes) == n and all(s >= (r > 0) for s, r in zip(sizes, ratios)), (n, ratios, sizes)
            assert all(abs(s - r * n) <= 1 for s, r in zip(sizes[1:], ratios[1:]))
    with pytest.raises(ValueError):
        split_sizes(2, (0.8, 0.1, 0.1))


# ----------------------------------------------------------------------------- column files


def test_column_file_by_document_keeps_documents_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = column_documents(10)
    source = tmp_path / "corpus.conll"
    source.write_bytes(b"\n".join(docs))
    out = tmp_path / "split"
    assert split(source, out, "--ratios", "0.8,0.1,0.1", "--seed", "3") == 0

    info = manifest(out)
    ids = info["units"]
    assert sorted(ids["train"] + ids["dev"] + ids["test"]) == list(range(10))
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [8, 1, 1]
    assert info["by"] == "document" and info["format"] == "conll" and info["seed"] == 3
    written = {s: (out / f"{s}.conll").read_bytes() for s in ("train", "dev", "test")}
    assert sum((nonblank_lines(b) for b in written.values()), Counter()) == nonblank_lines(source.read_bytes())
    for name, data in written.items():  # each split is its documents, whole, in source order, one blank apart
        assert data == b"\n".join(docs[i] for i in ids[name])
        assert info["counts"][name]["sentences"] == sum(i % 3 + 1 for i in ids[name])
    stdout = capsys.readouterr().out
    assert "train: 8 documents" in stdout and str(out / "split.json") in stdout

    whole = tmp_path / "whole"  # everything in train: the source comes back byte for byte
    assert split(source, whole, "--ratios", "1,0,0") == 0
    assert (whole / "train.conll").read_bytes() == source.read_bytes()
    assert (whole / "dev.conll").read_bytes() == b""


def test_column_file_by_sentence_with_crlf(tmp_path: Path) -> None:
    units = sentences_file(20, "\r\n")
    source = tmp_path / "monero.tsv"
    source.write_bytes(b"\r\n".join(units).rstrip(b"\r\n"))  # no newline at the end of the last line
    out = tmp_path / "split"
    assert split(source, out, "--by", "sentence", "--ratios", "0.7,0.15,0.15", "--seed", "1") == 0

    info = manifest(out)
    ids = info["units"]
    assert sorted(ids["train"] + ids["dev"] + ids["test"]) == list(range(20))
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [14, 3, 3]
    written = {s: (out / f"{s}.tsv").read_bytes() for s in ("train", "dev", "test")}
    expected = nonblank_lines(b"".join(units))
    assert sum((nonblank_lines(b) for b in written.values()), Counter()) == expected
    for name, data in written.items():
        assert data == b"\r\n".join(units[i] for i in ids[name])
        assert info["counts"][name] == {"units": len(ids[name]), "sentences": len(ids[name]),
                                        "tokens": sum(i % 4 + 1 + (i == 5) for i in ids[name])}
    assert info["docstart_lines_dropped"] == 0


def test_source_order_cuts_contiguous_runs_train_first(tmp_path: Path) -> None:
    units = sentences_file(20)
    source = tmp_path / "monero.tsv"
    source.write_bytes(b"\n".join(units))
    out = tmp_path / "split"
    assert split(source, out, "--by", "sentence", "--ratios", "0.6,0.2,0.2", "--order", "source") == 0
    info = manifest(out)
    assert info["units"] == {"train": list(range(12)), "dev": list(range(12, 16)), "test": list(range(16, 20))}
    assert info["order"] == "source" and info["seed"] is None
    assert (out / "test.tsv").read_bytes() == b"\n".join(units[16:])
    shuffled = tmp_path / "shuffled"
    assert split(source, shuffled, "--by", "sentence", "--ratios", "0.6,0.2,0.2") == 0
    assert manifest(shuffled)["units"] != info["units"] and manifest(shuffled)["order"] == "shuffle"


def test_sentence_split_drops_docstart_lines_and_counts_them(tmp_path: Path) -> None:
    source = tmp_path / "c.conll"
    source.write_text("-DOCSTART- O\n\na O\n\nb O\n\n# doc 2\n-DOCSTART- O\n\nc O\nd O\n", encoding="utf-8")
    out = tmp_path / "split"
    assert split(source, out, "--by", "sentence", "--ratios", "0.34,0.33,0.33") == 0
    written = b"".join((out / f"{s}.conll").read_bytes() for s in ("train", "dev", "test"))
    assert b"DOCSTART" not in written
    assert nonblank_lines(written) == Counter([b"a O\n", b"b O\n", b"# doc 2\n", b"c O\n", b"d O\n"])
    assert b"# doc 2\nc O\nd O\n" in written  # the comment stays right before the sentence that follows it
    assert manifest(out)["docstart_lines_dropped"] == 2


# ----------------------------------------------------------------------------- CoNLL-U


def conllu_sentences(n_docs: int) -> list[list[str]]:
    """Sentences (lines without line endings) of n_docs MoNERo-style documents of d % 3 + 1 sentences: `# newdoc`
    and `# newpar` before a document's first sentence, `# sent_id` and `# text` before each; sentence s has
    s + 2 words, the first sentence of a document a multiword range line `1-2`, the second an empty node `1.1`."""
    sentences = []
    for d in range(n_docs):
        for s in range(d % 3 + 1):
            words = [f"d{d}s{s}w{w}" for w in range(1, s + 3)]
            lines = [f"# newdoc id = doc{d}", "# newpar"] if s == 0 else []
            lines += [f"# sent_id = doc{d}-{s}", f"# text = {' '.join(words)}"]
            if s == 0:
                lines.append(f"1-2\td{d}range\t_\t_\t_\t_\t_\t_\t_\t_")
            for w, form in enumerate(words, 1):
                tag = "B-DISO" if w == 1 else "O"
                lines.append(f"{w}\t{form}\t{form}\tNOUN\t_\t_\t{w - 1}\t{'root' if w == 1 else 'dep'}\t_\tner={tag}")
                if s == 1 and w == 1:
                    lines.append("1.1\tpro\t_\tPRON\t_\t_\t_\t_\t0:root\t_")
            sentences.append(lines)
    return sentences


def is_marker(line: str) -> bool:
    return line.startswith(("# newdoc", "# newpar"))


def conllu_units(sentences: list[list[str]], newline: str = "\n", markers: bool = True) -> list[bytes]:
    """Each sentence's lines (with or without its newdoc/newpar lines) and the blank line after it."""
    return ["".join(line + newline for line in lines if markers or not is_marker(line)).encode() + newline.encode()
            for lines in sentences]


def conllu_documents(sentences: list[list[str]], units: list[bytes]) -> list[bytes]:
    """units grouped by document: a document starts at each sentence with a `# newdoc` line."""
    docs: list[bytes] = []
    for lines, unit in zip(sentences, units):
        if lines[0].startswith("# newdoc"):
            docs.append(b"")
        docs[-1] += unit
    return docs


def parsed_texts(data: bytes) -> list[str]:
    """The `# text` of every sentence, as the conllu package reads the file (it fails on invalid CoNLL-U)."""
    return [sentence.metadata["text"] for sentence in conllu.parse(data.decode("utf-8"))]


def text_of(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("# text = ")).removeprefix("# text = ")


def words_of(lines: list[str]) -> int:
    """Token lines with an integer id: what split.json counts as tokens (not ranges, not empty nodes)."""
    return sum(line.split("\t", 1)[0].isdigit() for line in lines if not line.startswith("#"))


def test_conllu_by_sentence_shuffled_drops_newdoc_newpar_and_keeps_crlf(tmp_path: Path) -> None:
    sentences = conllu_sentences(5)  # 9 sentences
    source = tmp_path / "monero.conllu"
    source.write_bytes(b"".join(conllu_units(sentences, "\r\n")))
    expected = conllu_units(sentences, "\r\n", markers=False)
    out = tmp_path / "split"
    assert split(source, out, "--by", "sentence", "--seed", "4") == 0

    info = manifest(out)
    ids = info["units"]
    assert info["format"] == "conllu" and info["unit"] == "sentence" and info["order"] == "shuffle"
    assert sorted(ids["train"] + ids["dev"] + ids["test"]) == list(range(9))
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [7, 1, 1]
    assert info["newdoc_lines_dropped"] == 5 and info["newpar_lines_dropped"] == 5
    outputs: Counter[bytes] = Counter()
    for name in ("train", "dev", "test"):  # each split: its sentences in source order, a blank line after each
        data = (out / f"{name}.conllu").read_bytes()
        assert data == b"".join(expected[i] for i in ids[name])
        assert data.count(b"\n") == data.count(b"\r\n") and data.endswith(b"\r\n\r\n")
        assert parsed_texts(data) == [text_of(sentences[i]) for i in ids[name]]
        assert info["counts"][name] == {"units": len(ids[name]), "sentences": len(ids[name]),
                                        "tokens": sum(words_of(sentences[i]) for i in ids[name])}
        outputs.update(data.split(b"\r\n\r\n")[:-1])
    assert outputs == Counter(unit.removesuffix(b"\r\n\r\n") for unit in expected)  # every sentence once
    assert b"\n1-2\t" in b"".join(outputs) and b"\n1.1\t" in b"".join(outputs)  # ranges, empty nodes travel too

    again = tmp_path / "again"  # the same inputs give the same bytes; another seed another split
    assert split(source, again, "--by", "sentence", "--seed", "4") == 0
    assert files_bytes(again) == files_bytes(out)
    assert split(source, tmp_path / "other", "--by", "sentence", "--seed", "5") == 0
    assert manifest(tmp_path / "other")["units"] != ids


def test_conllu_by_sentence_in_source_order_keeps_documents(tmp_path: Path) -> None:
    sentences = conllu_sentences(5)
    units = conllu_units(sentences)
    source = tmp_path / "monero.conllu"
    source.write_bytes(b"".join(units))
    out = tmp_path / "split"
    assert split(source, out, "--by", "sentence", "--order", "source", "--ratios", "0.6,0.2,0.2") == 0
    info = manifest(out)
    assert info["units"] == {"train": [0, 1, 2, 3, 4], "dev": [5, 6], "test": [7, 8]}
    assert info["newdoc_lines_dropped"] == 0 and info["newpar_lines_dropped"] == 0  # kept with their sentence
    written = [(out / f"{s}.conllu").read_bytes() for s in ("train", "dev", "test")]
    assert b"".join(written) == source.read_bytes()  # every line, in order, byte for byte
    for data, name in zip(written, ("train", "dev", "test")):
        parsed = conllu.parse(data.decode("utf-8"))
        assert [s.metadata["text"] for s in parsed] == [text_of(sentences[i]) for i in info["units"][name]]
    dev = conllu.parse(written[1].decode("utf-8"))  # doc2's last sentence (no newdoc of its own), doc3's first
    assert "newdoc id" not in dev[0].metadata and dev[1].metadata["newdoc id"] == "doc3"


def test_conllu_by_document_keeps_documents_whole(tmp_path: Path) -> None:
    sentences = conllu_sentences(10)
    docs = conllu_documents(sentences, conllu_units(sentences))
    source = tmp_path / "monero.conllu"
    source.write_bytes(b"".join(docs))
    out = tmp_path / "split"
    assert split(source, out, "--seed", "2") == 0
    info = manifest(out)
    ids = info["units"]
    assert info["unit"] == "document" and "newdoc_lines_dropped" not in info
    assert sorted(ids["train"] + ids["dev"] + ids["test"]) == list(range(10))
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [8, 1, 1]
    written = {s: (out / f"{s}.conllu").read_bytes() for s in ("train", "dev", "test")}
    assert sum((nonblank_lines(b) for b in written.values()), Counter()) == nonblank_lines(source.read_bytes())
    doc_of = [d for d in range(10) for _ in range(d % 3 + 1)]
    for name, data in written.items():
        assert data == b"".join(docs[i] for i in ids[name])
        parsed = conllu.parse(data.decode("utf-8"))
        assert [s.metadata["text"] for s in parsed] == [text_of(lines) for lines, d in zip(sentences, doc_of)
                                                        if d in ids[name]]
        assert [s.metadata["newdoc id"] for s in parsed if "newdoc id" in s.metadata] == [f"doc{i}" for i in ids[name]]
        assert info["counts"][name]["sentences"] == sum(i % 3 + 1 for i in ids[name])
        assert info["counts"][name]["tokens"] == sum(words_of(lines) for lines, d in zip(sentences, doc_of)
                                                     if d in ids[name])

    in_order = tmp_path / "in_order"
    assert split(source, in_order, "--order", "source", "--ratios", "0.6,0.2,0.2") == 0
    assert manifest(in_order)["units"] == {"train": list(range(6)), "dev": [6, 7], "test": [8, 9]}
    assert b"".join((in_order / f"{s}.conllu").read_bytes() for s in ("train", "dev", "test")) == source.read_bytes()


def test_conllu_leading_sentences_extra_blanks_and_a_missing_last_newline(tmp_path: Path) -> None:
    token = "1\tx\tx\tX\t_\t_\t0\troot\t_\t_"
    source = tmp_path / "c.txt"  # not .conllu: --format conllu, and the outputs keep .txt
    source.write_bytes(f"# sent_id = pre\n{token}\n\n\n# newdoc id = a\n# sent_id = a1\n{token}\n\n\n"
                       f"# newdoc id = b\n# sent_id = b1\n{token}".encode())
    assert detect_format(source) == "conll" and detect_format(tmp_path / "x.CONLLU") == "conllu"
    out = tmp_path / "split"
    assert split(source, out, "--format", "conllu", "--order", "source", "--ratios", "0.34,0.33,0.33") == 0
    assert manifest(out)["units"] == {"train": [0], "dev": [1], "test": [2]}  # sentences before a newdoc: doc 0
    assert (out / "train.txt").read_bytes() == f"# sent_id = pre\n{token}\n\n".encode()
    assert (out / "dev.txt").read_bytes() == f"# newdoc id = a\n# sent_id = a1\n{token}\n\n".encode()
    assert (out / "test.txt").read_bytes() == f"# newdoc id = b\n# sent_id = b1\n{token}\n\n".encode()
    whole = tmp_path / "whole"  # a split with no unit is an empty (valid) file
    assert split(source, whole, "--format", "conllu", "--by", "sentence", "--ratios", "1,0,0") == 0
    assert (whole / "dev.txt").read_bytes() == b"" and len(conllu.parse((whole / "train.txt").read_text())) == 3


# ----------------------------------------------------------------------------- BRAT and JSONL


def brat_folder(folder: Path, n: int) -> Path:
    folder.mkdir()
    for d in range(n):
        (folder / f"doc{d:02d}.txt").write_text(f"Pacient {d} cu febra.\n", encoding="utf-8")
        if d != 4:  # an unannotated document travels without an .ann
            (folder / f"doc{d:02d}.ann").write_text(f"T1\tDISO 13 18\tfebra\n#1\tNote T1\tn{d}\n", encoding="utf-8")
    return folder


def test_brat_folder_copies_each_document_into_one_split(tmp_path: Path) -> None:
    source = brat_folder(tmp_path / "brat", 10)
    out = tmp_path / "split"
    assert split(source, out) == 0
    info = manifest(out)
    ids = info["units"]
    assert sorted(ids["train"] + ids["dev"] + ids["test"]) == [f"doc{d:02d}" for d in range(10)]
    assert [len(ids[s]) for s in ("train", "dev", "test")] == [8, 1, 1]
    for name in ("train", "dev", "test"):
        names = sorted(p.name for p in (out / name).iterdir())
        expected = [f"{i}.{ext}" for i in ids[name] for ext in ("txt", "ann")]
        assert names == sorted(n for n in expected if (source / n).exists())
        for n in names:
            assert (out / name / n).read_bytes() == (source / n).read_bytes()
    assert info["format"] == "brat" and info["counts"]["train"] == {"units": 8}

    (source / "doc07.ann").write_text("T1\tDISO 0 7\tPacient\n", encoding="utf-8")  # changed content, new digest
    assert split(source, tmp_path / "again") == 0
    assert manifest(tmp_path / "again")["source_sha256"] != info["source_sha256"]


def test_jsonl_is_split_by_patient(tmp_path: Path) -> None:
    records = [{"patient_id": f"p{i % 7}", "note_id": f"n{i}", "text": f"note {i}", "label": int(i % 7 == 0)}
               for i in range(30)]
    source = tmp_path / "notes.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" + ("\n" if i == 3 else "") for i, r in enumerate(records)),
                      encoding="utf-8")
    out = tmp_path / "split"
    assert split(source, out, "--ratios", "0.6,0.2,0.2", "--seed", "5") == 0
    info = manifest(out)
    assert info["unit"] == "patient"
    patients = {}
    for name in ("train", "dev", "test"):
        for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            patients.setdefault(json.loads(line)["patient_id"], set()).add(name)
        assert info["counts"][name]["records"] == sum(
            1 for r in records if r["patient_id"] in info["units"][name])
    assert all(len(splits) == 1 for splits in patients.values()) and len(patients) == 7
    assert [len(info["units"][s]) for s in ("train", "dev", "test")] == [5, 1, 1]  # 7 * 0.2 = 1.4 -> 1
    written = b"".join((out / f"{s}.jsonl").read_bytes() for s in ("train", "dev", "test"))
    assert nonblank_lines(written) == nonblank_lines(source.read_bytes())


# ----------------------------------------------------------------------------- determinism


def test_same_inputs_give_the_same_bytes_and_seeds_differ(tmp_path: Path) -> None:
    source = tmp_path / "s.conll"
    source.write_bytes(b"\n".join(sentences_file(40)))
    runs = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        assert split(source, tmp_path / name, "--by", "sentence", "--seed", seed) == 0
        runs[name] = files_bytes(tmp_path / name)
    assert runs["a"] == runs["b"] and set(runs["a"]) == {"train.conll", "dev.conll", "test.conll", "split.json"}
    assert manifest(tmp_path / "a")["units"] != manifest(tmp_path / "c")["units"]
    assert runs["a"]["train.conll"] != runs["c"]["train.conll"]


# ----------------------------------------------------------------------------- bad input


def assert_user_error(capsys: pytest.CaptureFixture[str], code: int, where: str, *phrases: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {where}"), err
    assert SECRET not in err and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err
    return err


def test_bad_ratios_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "s.conll"
    source.write_bytes(b"\n".join(sentences_file(10)))
    out = tmp_path / "out"
    for ratios in ["0.8,0.1", "0.8,0.1,0.2", "0.9,-0.1,0.2", "a,b,c", "nan,0,1"]:
        code = split(source, out, "--by", "sentence", "--ratios", ratios)
        assert_user_error(capsys, code, "--ratios")
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.conll"]


@pytest.mark.parametrize("content, line, phrase", [
    (b"", None, "no sentences"),
    (b"# only a comment\n\n", None, "no sentences"),
    (f"a O\n\n{SECRET} O\n".encode() + b"b\xff O\n", 4, "UTF-8"),
    (b"a O\n\nb O\n\nc O\n", None, "--by sentence"),  # no -DOCSTART-: one document
    (b"-DOCSTART-\n\na O\n\nb O\n", None, "--by sentence"),  # one document cannot be split three ways
])
def test_bad_column_files_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                                             line: int | None, phrase: str) -> None:
    source = tmp_path / "s.conll"
    source.write_bytes(content)
    out = tmp_path / "out"
    code = split(source, out)
    assert_user_error(capsys, code, f"{source}:{line}:" if line else f"{source}:", phrase)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.conll"]


CONLLU_TOKEN = b"1\tx\tx\tX\t_\t_\t0\troot\t_\t_\n"


@pytest.mark.parametrize("content, by, line, phrase", [
    (b"", "sentence", None, "no sentences"),
    (b"# newdoc id = d\n# sent_id = 1\n\n", "document", None, "no sentences"),
    (b"# text = a\n" + CONLLU_TOKEN + b"\n# text = " + SECRET.encode() + b"\xff\n" + CONLLU_TOKEN, "sentence", 4,
     "UTF-8"),
    (b"# sent_id = 1\n" + CONLLU_TOKEN + b"2\t" + SECRET.encode() + b"\t_\tX\t_\t_\t1\tdep\t_\n\n", "sentence", 3,
     "10 tab-separated fields"),
    (CONLLU_TOKEN + b"\n" + SECRET.encode() + b" O\n\n", "sentence", 3, "10 tab-separated fields"),  # CoNLL, not -U
    (CONLLU_TOKEN + b"# text = " + SECRET.encode() + b"\n\n", "sentence", 2, "comment line inside a sentence"),
    (b"# sent_id = 1\n" + CONLLU_TOKEN + b"\n# sent_id = 2\n" + CONLLU_TOKEN + b"\n# sent_id = 3\n" + CONLLU_TOKEN,
     "document", None, "--by sentence"),  # no `# newdoc`: one document
])
def test_bad_conllu_files_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                                             by: str, line: int | None, phrase: str) -> None:
    source = tmp_path / "s.conllu"
    source.write_bytes(content)
    code = split(source, tmp_path / "out", "--by", by)
    err = assert_user_error(capsys, code, f"{source}:{line}:" if line else f"{source}:", phrase)
    assert "newdoc" in err or phrase != "--by sentence"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.conllu"]


@pytest.mark.parametrize("content, line, phrase", [
    (b"", None, "no records"),
    (b'{"patient_id": "p1", "text": "x", "label": 0}\n{"text": "' + SECRET.encode() + b'", "label": 1}\n', 2,
     "patient_id"),
    (b'{"patient_id": "p1", "text": "x", "label": 0}\n\n{"patient_id": "p2", "text": "' + SECRET.encode() + b'"\n',
     3, "not valid JSON"),
])
def test_bad_jsonl_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                                       line: int | None, phrase: str) -> None:
    source = tmp_path / "notes.jsonl"
    source.write_bytes(content)
    code = split(source, tmp_path / "out", "--ratios", "1,0,0")
    assert_user_error(capsys, code, f"{source}:{line}:" if line else f"{source}:", phrase)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"]


def test_missing_source_empty_brat_and_sentence_mode_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert_user_error(capsys, split(tmp_path / "missing.conll", out), f"{tmp_path / 'missing.conll'}:", "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(capsys, split(empty, out), f"{empty}:", "no .txt")
    brat = brat_folder(tmp_path / "brat", 5)
    assert_user_error(capsys, split(brat, out, "--by", "sentence"), f"{brat}:", "column files only")
    (brat / "doc02.ann").write_bytes(b"T1\tDISO 0 3\t" + SECRET.encode() + b"\xfe\n")
    assert_user_error(capsys, split(brat, out), f"{brat / 'doc02.ann'}:1:", "UTF-8")
    (brat / "orphan.ann").write_text("T1\tDISO 0 1\tx\n", encoding="utf-8")
    assert_user_error(capsys, split(brat, out), f"{brat / 'orphan.ann'}:", "orphan.txt")
    notes = tmp_path / "n.jsonl"
    notes.write_text('{"patient_id": "p", "text": "x", "label": 0}\n', encoding="utf-8")
    assert_user_error(capsys, split(notes, out, "--by", "sentence"), f"{notes}:", "column files only")
    assert not out.exists()


def test_non_empty_output_needs_force_and_never_replaces_the_source(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "s.conll"
    source.write_bytes(b"\n".join(sentences_file(10)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    assert_user_error(capsys, split(source, out, "--by", "sentence"), f"{out}:", "--force")
    assert files_bytes(out) == {"keep.txt": b"mine"}
    assert split(source, out, "--by", "sentence", "--force") == 0
    assert sorted(files_bytes(out)) == ["dev.conll", "split.json", "test.conll", "train.conll"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.conll"]  # no temporary folder left

    brat = brat_folder(tmp_path / "brat", 5)
    assert_user_error(capsys, split(brat, tmp_path, "--force"), f"{tmp_path}:", "source")
    assert len(list(brat.iterdir())) == 9
