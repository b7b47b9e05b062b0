"""NER fine-tuning's reading and scoring without a model: label spaces (none shared is an error, some a warning),
the headline exact-offset F1 against a hand count, and the study's per-unit rows from the written .ann files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medtrain.config import build_config
from medtrain.data.ner import Entity, NerDocument, Sentence, Word
from medtrain.errors import UserError
from medtrain.finetune.config import EvalConfig, FinetuneConfig
from medtrain.data.ner.scoring import span_unit_counts
from medtrain.finetune.ner import NerTask
from medtrain.study.compare import ner_scores

# Two Spanish documents; the second has a nested entity (lung inside lung cancer) a flat tagger cannot both predict.
ES = {
    "a": ("aspirina cura fiebre pulmon\n", [("PROTEINAS", 0, 8), ("ENFERMEDAD", 14, 20), ("ANATOMIA", 21, 27)]),
    "b": ("lung cancer pain\n", [("ENFERMEDAD", 0, 11), ("ANATOMIA", 0, 4), ("ENFERMEDAD", 12, 16)]),
}
# Romanian, MoNERo-shaped: token lemma tag POS, one document.
RO = "aspirina\taspirina\tB-CHEM\tNOUN\nbun\tbun\tO\tADJ\n\nos\tos\tB-ANAT\tNOUN\n"
ES_MAP = {"PROTEINAS": "CHEM", "ENFERMEDAD": "DISO", "ANATOMIA": "ANAT"}


def write_brat(folder: Path, docs: dict[str, tuple[str, list[tuple[str, int, int]]]]) -> Path:
    folder.mkdir(parents=True)
    for name, (text, entities) in docs.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
        (folder / f"{name}.ann").write_text("".join(f"T{i}\t{t} {s} {e}\t{text[s:e]}\n"
                                                    for i, (t, s, e) in enumerate(entities, 1)), encoding="utf-8")
    return folder


@pytest.fixture()
def data(tmp_path: Path) -> dict[str, Any]:
    es = write_brat(tmp_path / "es", ES)
    ro = tmp_path / "ro.conll"
    ro.write_text(RO, encoding="utf-8")
    return {"es": str(es), "ro": {"path": str(ro), "format": "conll", "columns": {"token": 0, "tag": 2}}}


def task(tmp_path: Path, data: dict[str, Any], test: list[str], labels: dict[str, Any] | None = None) -> NerTask:
    cfg = build_config(FinetuneConfig, {
        "output_dir": str(tmp_path / "run"), "task": "ner", "model": str(tmp_path / "model"),
        "data": {"format": "brat", "train": {"es": data["es"]}, "dev": {"es": data["es"]},
                 "test": {lang: data[lang] for lang in test}},
        **({"labels": labels} if labels else {})})
    return NerTask(cfg)


def test_a_test_language_sharing_no_type_stops_the_run_naming_both_sets(tmp_path: Path, data: dict) -> None:
    with pytest.raises(UserError, match=r"data.test.ro: its entity types \(ANAT, CHEM\) share none with the "
                                        r"training languages' \(ANATOMIA, ENFERMEDAD, PROTEINAS\)"):
        task(tmp_path, data, ["ro"])


def test_a_partial_overlap_warns_and_scores_the_shared_types_only(tmp_path: Path, data: dict,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    labels = {"map": {"es": {"PROTEINAS": "CHEM", "ENFERMEDAD": "DISO"}}, "keep": ["CHEM", "DISO", "ANAT"]}
    with caplog.at_level(logging.WARNING):
        t = task(tmp_path, data, ["es", "ro"], labels)
    assert "entity types ANAT are not among the trained types and are not scored; scored: CHEM" in caplog.text
    space = t.label_space()
    assert space["train"] == ["CHEM", "DISO"] and space["test"]["ro"] == ["ANAT", "CHEM"]
    assert space["scored"] == {"es": ["CHEM", "DISO"], "ro": ["CHEM"]} and space["unscored"]["ro"] == ["ANAT"]
    assert space["dropped"]["train"]["es"] == {"ANATOMIA": 2}  # unmapped, so outside keep
    assert t.labels == ["O", "B-CHEM", "I-CHEM", "B-DISO", "I-DISO"]  # ids from the training types only
    ro = t.parts["test"]["ro"]
    gold_tags = [list(s.tags) for s in ro.sentences]
    assert gold_tags == [["B-CHEM", "O"], ["B-ANAT"]]
    perfect = t._report(ro, gold_tags, EvalConfig(bootstrap=20))
    assert perfect["f1"]["value"] == 1.0 and list(perfect["per_type"]) == ["CHEM"]  # ANAT neither gold nor predicted
    assert perfect["scored_types"] == ["CHEM"] and perfect["unscored_types"] == ["ANAT"]
    assert perfect["bootstrap_unit"] == "sentence"  # one document: its sentences are resampled
    missed = t._report(ro, [["O", "O"], ["B-ANAT"]], EvalConfig(bootstrap=20))
    assert missed["f1"]["value"] == 0.0 and missed["per_type"]["CHEM"]["support"] == 1


# Predicted tags per sentence (documents a, b) and, by hand, the entities they mean.
PRED_TAGS = [["B-PROTEINAS", "O", "B-ENFERMEDAD", "O"], ["B-ENFERMEDAD", "I-ENFERMEDAD", "B-ANATOMIA"]]
PRED = {("a", "PROTEINAS", 0, 8), ("a", "ENFERMEDAD", 14, 20), ("b", "ENFERMEDAD", 0, 11), ("b", "ANATOMIA", 12, 16)}


def test_headline_is_exact_offset_f1_over_every_gold_entity(tmp_path: Path, data: dict) -> None:
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    t = task(tmp_path, data, ["es"])
    part = t.parts["test"]["es"]
    report = t._report(part, PRED_TAGS, EvalConfig(bootstrap=50))
    gold = {(name, typ, s, e) for name, (_, entities) in ES.items() for typ, s, e in entities}
    tp = len(gold & PRED)  # 3 of 4 predicted, of 6 gold (the nested lung among them)
    precision, recall = tp / len(PRED), tp / len(gold)
    assert report["f1"]["value"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert (report["precision"]["value"], report["recall"]["value"]) == pytest.approx((precision, recall))
    assert report["per_type"]["ENFERMEDAD"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8,
                                                              "support": 3})
    assert report["per_type"]["ANATOMIA"]["f1"] == 0.0 and report["bootstrap_unit"] == "document"
    assert report["recall_ceiling"] == pytest.approx(5 / 6)  # lung inside lung cancer cannot be tagged
    word = f1_score([list(s.tags) for s in part.sentences], PRED_TAGS, mode="strict", scheme=IOB2)
    assert report["word_f1"]["value"] == pytest.approx(word) and word != pytest.approx(report["f1"]["value"])
    lo, hi = report["f1"]["lo"], report["f1"]["hi"]
    assert lo is not None and lo <= report["f1"]["value"] <= hi


def test_the_study_counts_the_written_ann_files_as_finetune_counts(tmp_path: Path, data: dict) -> None:
    t = task(tmp_path, data, ["es"])
    part = t.parts["test"]["es"]
    run_dir = tmp_path / "run"
    t.write_predictions({"es": PRED_TAGS}, {}, run_dir / "predictions")
    scores = ner_scores(run_dir, "es", part.docs, part.scored)
    assert scores.units == ("a", "b")
    # (tp, predicted, gold) per document, counted by hand from ES and PRED.
    assert scores.rows.tolist() == [[2, 2, 3], [1, 2, 3]]
    assert scores.value() == pytest.approx(t._report(part, PRED_TAGS, EvalConfig(bootstrap=10))["f1"]["value"])
    assert scores.value(np.array([0, 0])) == pytest.approx(2 * 2 / (2 + 3))  # the bootstrap's resampled units
    only_disease = ner_scores(run_dir, "es", part.docs, {"ENFERMEDAD"})  # unscored types count for neither side
    assert only_disease.rows.tolist() == [[1, 1, 1], [1, 1, 2]]
    (run_dir / "predictions" / "es" / "b.ann").unlink()
    (run_dir / "predictions" / "es" / "b.txt").unlink()
    with pytest.raises(UserError, match="do not match its gold documents"):
        ner_scores(run_dir, "es", part.docs, part.scored)


def test_one_document_is_resampled_by_sentence_each_entity_in_the_sentence_it_starts_in() -> None:
    words = [Word("aa", 0, 2), Word("bb", 3, 5)], [Word("cc", 6, 8), Word("dd", 9, 11)]
    doc = NerDocument("d", "aa bb\ncc dd", [Sentence("d", list(w), ["O", "O"]) for w in words],
                      [Entity("X", ((0, 2),)), Entity("X", ((9, 11),))])
    units = span_unit_counts([doc], {"d": [Entity("X", ((9, 11),)), Entity("Y", ((6, 8),))]}, {"X", "Y"})
    assert units == {"d:0": {"X": (0, 0, 1)}, "d:1": {"X": (1, 1, 1), "Y": (0, 1, 0)}}
