"""Decontamination: the containment / patient rule on hand-made documents, then `medtrain prepare` with
`exclude` on a corpus with planted copies of evaluation documents (the shards equal those of the corpus without
them), the manifest's record, re-preparing when a source changes, `medtrain overlap`, verify of every written
file, and bad input."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from medtrain.cli import run as medtrain
from medtrain.data.decontaminate import KEPT, EvaluationIndex, EvaluationSource, match_batch, words
from medtrain.data.exclude_config import ExcludeConfig, ExcludeSource
from medtrain.data.sample import write_sample_data
from medtrain.data.shards import open_shard, read_manifest
from medtrain.data.tokenizer import load_tokenizer

NGRAM = 13


# ----------------------------------------------------------------------------- the rule


def made_up(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(400)}" for _ in range(n))


def rule_index(texts: list[list[str]], patients: list[set[str]], by: list[str] | None = None,
               containment: float = 0.5) -> EvaluationIndex:
    sources = [EvaluationSource(f"s{i}", Path(f"s{i}"), "jsonl", "", t, p) for i, (t, p) in enumerate(zip(texts, patients))]
    rule = ExcludeConfig([ExcludeSource(s.path) for s in sources], containment=containment, by=by or [])
    return EvaluationIndex.build(rule, sources)


def test_containment_catches_copies_edits_and_embeddings_not_shared_templates() -> None:
    rng = random.Random(0)
    evaluation = [made_up(rng, 80) for _ in range(4)]
    template = made_up(rng, 20)  # a phrase every note of a hospital has
    evaluation[3] = template + " " + evaluation[3]
    index = rule_index([evaluation[:2], evaluation[2:]], [set(), set()])
    half = evaluation[1].split()
    texts = {
        "unrelated": made_up(rng, 200),
        "verbatim": evaluation[0],
        "whitespace and case": evaluation[2].upper().replace(" ", "\n  "),
        "embedded": made_up(rng, 100) + " " + evaluation[1] + ", " + made_up(rng, 60),
        "punctuation split": " , ".join(evaluation[0].split()),
        "60% of one": " ".join(half[: len(half) * 6 // 10]),
        "40% of one": " ".join(half[: len(half) * 4 // 10]),
        "the template only": template + " " + made_up(rng, 100),
    }
    got = dict(zip(texts, match_batch(index, list(texts.values()), None).source.tolist()))
    assert got == {"unrelated": KEPT, "verbatim": 0, "whitespace and case": 1, "embedded": 0,
                   "punctuation split": 0, "60% of one": 0, "40% of one": KEPT, "the template only": KEPT}


def test_short_evaluation_documents_count_as_one_ngram_and_patients_drop_whatever_the_text() -> None:
    rng = random.Random(1)
    short = "patient denies chest pain today"  # 5 words < 13: one n-gram of all of them
    index = rule_index([[short], [made_up(rng, 50)]], [set(), {"p-7"}], by=["patient_id"])
    texts = [made_up(rng, 30) + " Patient denies chest pain, today " + made_up(rng, 5), "patient denies chest",
             made_up(rng, 40), made_up(rng, 40)]
    match = match_batch(index, texts, [(), (), ("p-7",), ("p-8",)])
    assert match.source.tolist() == [0, KEPT, 1, KEPT]
    assert index.short_lengths == (5,) and words("Patient-denies, CHEST") == ["patient", "denies", "chest"]


def test_an_empty_index_keeps_everything() -> None:
    index = rule_index([[""]], [set()])
    assert match_batch(index, ["some text here"] * 3, None).source.tolist() == [KEPT] * 3


# ----------------------------------------------------------------------------- prepare with exclude


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("decontaminate") / "data"
    write_sample_data(out, seed=0, scale=0.3)
    return out


def brat_texts(folder: Path) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))]


def planted_corpus(sample: Path, out: Path) -> tuple[Path, Path, list[int]]:
    """general_es with planted records: copies (verbatim, re-spaced, upper-cased, embedded) of es NER test
    documents and a note of a screening test patient; every record carries a patient_id. Returns the corpus,
    the same corpus without the planted lines, and the planted lines' numbers."""
    rng = random.Random(5)
    clean = [json.loads(line) for line in (sample / "corpora" / "general_es.jsonl").read_text().splitlines()]
    tests = brat_texts(sample / "ner" / "es" / "test")
    patient = json.loads((sample / "screening" / "es" / "test.jsonl").read_text().splitlines()[0])["patient_id"]
    planted = [tests[0], "  ".join(tests[1].split()), tests[2].upper(),
               clean[0]["text"] + "\n" + tests[3] + "\n" + clean[1]["text"]]
    records = [{"text": r["text"], "patient_id": f"c-{i}"} for i, r in enumerate(clean)]
    extra = [{"text": t, "patient_id": f"x-{i}"} for i, t in enumerate(planted)]
    extra.append({"text": clean[2]["text"][::-1], "patient_id": patient})  # their note: no test text in it
    lines = list(records)
    at = []
    for record in extra:
        position = rng.randrange(len(lines) + 1)
        lines.insert(position, record)
    at = [i + 1 for i, r in enumerate(lines) if r in extra]
    dirty, plain = out / "planted.jsonl", out / "clean.jsonl"
    dirty.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    plain.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return dirty, plain, at


def prepare_config(sample: Path, corpus: Path, out: Path, exclude: dict | None) -> Path:
    body = {"tokenizer": str(sample / "tokenizer"), "output_dir": str(out), "seq_len": 32,
            "validation_fraction": 0.1, "num_workers": 0,
            "corpora": [{"name": "notes", "path": str(corpus), "language": "es", "domain": "clinical"}]}
    if exclude is not None:
        body["exclude"] = exclude
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def exclude_section(sample: Path) -> dict:
    return {"sources": [str(sample / "ner" / "es" / "test"),
                        {"path": str(sample / "screening" / "es" / "test.jsonl"), "name": "screening-es"}],
            "by": ["patient_id"]}


def test_prepare_drops_exactly_the_planted_records_and_the_rest_packs_as_without_them(
        sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirty, plain, planted = planted_corpus(sample, tmp_path)
    assert medtrain(["prepare", str(prepare_config(sample, dirty, tmp_path / "excluded", exclude_section(sample)))]) == 0
    out = capsys.readouterr().out
    assert "notes: exclude dropped 5 documents: " in out and "screening-es 1 (" in out
    assert medtrain(["prepare", str(prepare_config(sample, plain, tmp_path / "clean", None))]) == 0
    excluded, clean = read_manifest(tmp_path / "excluded"), read_manifest(tmp_path / "clean")
    # nothing else dropped: the same documents in the same splits, so the same shard bytes
    assert [s.sha256 for s in excluded.shards] == [s.sha256 for s in clean.shards]
    assert excluded.corpora == clean.corpora
    entry = excluded.exclusion
    tokenizer = load_tokenizer(sample / "tokenizer")
    planted_lines = dirty.read_text().splitlines()
    planted_tokens = [len(tokenizer(json.loads(planted_lines[i - 1])["text"], add_special_tokens=False)["input_ids"])
                      for i in planted]
    dropped = entry["dropped"]["notes"]
    assert sum(d["documents"] for d in dropped.values()) == len(planted)
    assert sum(d["tokens"] for d in dropped.values()) == sum(planted_tokens)
    assert dropped["screening-es"]["documents"] == 1
    [ner, screening] = entry["sources"]
    assert ner["format"] == "brat" and ner["documents"] == len(brat_texts(sample / "ner" / "es" / "test"))
    assert screening["patients"] > 0 and len(screening["sha256"]) == 64
    assert entry["raw_coverage"]["notes"][ner["name"]] > 0.99  # the copies held all of the test set
    assert excluded.fingerprint() != clean.fingerprint()  # what was kept out is part of the data's identity
    # no 13-gram of a test document survives beyond those that the kept documents themselves hold
    decoded = " ".join(tokenizer.decode(row, skip_special_tokens=True) for s in excluded.shards
                       for row in open_shard(tmp_path / "excluded", excluded, s))
    kept = " ".join(json.loads(line)["text"] for line in plain.read_text().splitlines())
    assert ngrams(decoded) & evaluation_ngrams(sample) <= ngrams(kept)


def ngrams(text: str) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i: i + NGRAM]) for i in range(len(w) - NGRAM + 1)}


def evaluation_ngrams(sample: Path) -> set[tuple[str, ...]]:
    return set().union(*(ngrams(t) for t in brat_texts(sample / "ner" / "es" / "test")))



def test_a_changed_source_re_prepares_and_overlap_measures_without_writing(
        sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirty, _, _ = planted_corpus(sample, tmp_path)
    tests = tmp_path / "es-test"
    shutil.copytree(sample / "ner" / "es" / "test", tests)
    config = prepare_config(sample, dirty, tmp_path / "shards", {"sources": [str(tests)]})
    assert medtrain(["prepare", str(config)]) == 0
    assert medtrain(["prepare", str(config)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    first = next(iter(sorted(tests.glob("*.txt"))))
    first.write_text(first.read_text(encoding="utf-8") + " edited", encoding="utf-8")  # same path, other text
    assert medtrain(["prepare", str(config)]) == 2
    assert "different config, tokenizer or exclude sources" in capsys.readouterr().err
    assert medtrain(["prepare", str(config), "overwrite=true"]) == 0
    assert "exclude dropped" in capsys.readouterr().out

    report = tmp_path / "overlap.json"
    assert medtrain(["overlap", str(config), "output_dir=" + str(tmp_path / "never"), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "notes: exclude dropped 4 documents" in out and "share of each evaluation source's n-grams" in out
    assert not (tmp_path / "never").exists()
    assert json.loads(report.read_text())["dropped"] == read_manifest(tmp_path / "shards").exclusion["dropped"]


def test_verify_checks_the_tokenizer_copy_and_config_too(sample: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, plain, _ = planted_corpus(sample, tmp_path)
    shards = tmp_path / "shards"
    assert medtrain(["prepare", str(prepare_config(sample, plain, shards, None))]) == 0
    assert medtrain(["prepare", "--verify", str(shards)]) == 0
    assert "3 other files, all checksums match" in capsys.readouterr().out
    target = shards / "tokenizer" / "tokenizer.json"
    data = bytearray(target.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4] = b"XXXX"
    target.write_bytes(bytes(data))
    assert medtrain(["prepare", "--verify", str(shards)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {target}: checksum does not match manifest.json: the file " \
                                              "is corrupted or was edited"


@pytest.mark.parametrize("exclude, message", [
    ({"sources": ["missing/test"]}, "exclude.sources.0: evaluation source not found"),
    ({"sources": [{"path": "x.conllu"}]}, "exclude.sources.0: evaluation source not found"),
    ({"sources": ["SAMPLE/ner/es/test"], "ngram": 3}, "exclude.ngram must be >= 4"),
    ({"sources": ["SAMPLE/ner/es/test"], "by": ["mrn"]}, "exclude.by: no corpus has a field 'mrn'"),
    ({"sources": [{"path": "SAMPLE/ner/es/test", "colums": {}}]}, "exclude.sources.0.colums"),
    ({"sources": ["SAMPLE/screening/es/train.jsonl", "SAMPLE/screening/es/train.jsonl"]}, "names must be unique"),
])
def test_bad_exclude_is_one_line_naming_the_config_and_key_and_writes_nothing(
        sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], exclude: dict, message: str) -> None:
    _, plain, _ = planted_corpus(sample, tmp_path)
    exclude = json.loads(json.dumps(exclude).replace("SAMPLE", str(sample)))
    config = prepare_config(sample, plain, tmp_path / "shards", exclude)
    assert medtrain(["prepare", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {config}") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "shards").exists() and not list(tmp_path.glob("shards.tmp-*"))


def test_a_conllu_source_is_read_with_its_tag_place(sample: Path) -> None:
    """CoNLL-U needs columns.tag as fine-tuning does; its text is each sentence's # text."""
    from medtrain.data.decontaminate import read_source
    from medtrain.data.ner_format import ColumnFormat

    path = sample / "ner" / "ro" / "monero.conllu"
    source = read_source(ExcludeSource(path, columns=ColumnFormat(tag="misc:BioNERLabel")), path, "exclude.sources.0")
    assert source.format == "conllu" and len(source.texts) > 1
    text = path.read_text(encoding="utf-8")
    first = next(line for line in text.splitlines() if line.startswith("# text = "))[len("# text = "):]
    assert first in source.texts[0]
    assert np.mean([len(t) for t in source.texts]) > len(first)  # documents, not sentences


def test_the_sample_prepare_drops_exactly_its_planted_records(tmp_path: Path) -> None:
    """The bundled sample's prepare.yaml (its exclude section) against its contamination.json: every planted
    record dropped and nothing else, so the shards are those of the sample written --clean without exclude."""
    from medtrain.config import load_config
    from medtrain.data.pack import PrepareConfig, prepare

    dirty, clean = tmp_path / "dirty", tmp_path / "clean"
    write_sample_data(dirty, seed=0, scale=0.3)
    write_sample_data(clean, seed=0, scale=0.3, contaminate=False)
    settings = ["seq_len=32", "num_workers=1"]
    excluded = prepare(load_config(PrepareConfig, dirty / "prepare.yaml", settings))
    plain = prepare(load_config(PrepareConfig, clean / "prepare.yaml", [*settings, "exclude=null"]))
    assert [s.sha256 for s in excluded.shards] == [s.sha256 for s in plain.shards]
    planted = json.loads((dirty / "contamination.json").read_text())
    dropped = {corpus: sum(d["documents"] for d in by_source.values())
               for corpus, by_source in excluded.exclusion["dropped"].items() if by_source}
    assert dropped == {corpus: len(records) for corpus, records in planted.items()}
    patients = {corpus: sum(r["kind"] == "patient" for r in records) for corpus, records in planted.items()}
    assert all(n > 0 for n in patients.values())
