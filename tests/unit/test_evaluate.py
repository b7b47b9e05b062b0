"""`medtrain evaluate`: predicted files scored against gold with fine-tuning's scorer, checked against a plain
set count of (document, type, start, end); a run's own predictions give its results.json numbers; bad input is
one `error:` line with exit 2 and nothing written."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from medtrain.cli import run
from medtrain.data.ner.evaluate import evaluate, load_labels
from medtrain.errors import UserError
from medtrain.finetune.config import EvalConfig

# Three Spanish-style documents: (text, [(type, surface, occurrence)]) so offsets come from the text itself.
GOLD = {
    "a": ("aspirina cura fiebre alta\n", [("PROTEINAS", "aspirina"), ("ENFERMEDAD", "fiebre alta")]),
    "b": ("dolor de pulmon\ncancer de pulmon\n", [("ENFERMEDAD", "dolor de pulmon"), ("ANATOMIA", "pulmon"),
                                                  ("ENFERMEDAD", "cancer")]),
    "c": ("paracetamol y fiebre\n", [("PROTEINAS", "paracetamol"), ("ENFERMEDAD", "fiebre")]),
}
SECRET = "paracetamol"  # stands for corpus text, which must never reach stdout or stderr


def span(text: str, surface: str) -> tuple[int, int]:
    start = text.index(surface)
    return start, start + len(surface)


def gold_set(docs: dict[str, tuple[str, list[tuple[str, str]]]] = GOLD) -> set[tuple[str, str, int, int]]:
    return {(name, typ, *span(text, surface)) for name, (text, entities) in docs.items() for typ, surface in entities}


def write_gold(folder: Path, docs: dict[str, tuple[str, list[tuple[str, str]]]] = GOLD) -> Path:
    folder.mkdir(parents=True)
    for name, (text, entities) in docs.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
        lines = [f"T{i}\t{typ} {' '.join(map(str, span(text, surface)))}\t{surface}\n"
                 for i, (typ, surface) in enumerate(entities, 1)]
        (folder / f"{name}.ann").write_text("".join(lines), encoding="utf-8")
    return folder


def write_pred(folder: Path, entities: set[tuple[str, str, int, int]], docs: tuple[str, ...] = ("a", "b", "c"),
               txt: bool = False) -> Path:
    """One .ann per document in `docs` (no .txt unless asked): entity lines without their text, as other systems
    may write them."""
    folder.mkdir(parents=True)
    for name in docs:
        rows = sorted((s, e, t) for d, t, s, e in entities if d == name)
        (folder / f"{name}.ann").write_text("".join(f"T{i}\t{t} {s} {e}\n" for i, (s, e, t) in enumerate(rows, 1)))
        if txt:
            (folder / f"{name}.txt").write_text(GOLD[name][0], encoding="utf-8")
    return folder


def set_scores(gold: set[Any], pred: set[Any], types: set[str] | None = None) -> dict[str, float]:
    """Micro P/R/F1 over (document, type, start, end) tuples: the count the scorer must agree with."""
    if types is not None:
        gold, pred = {g for g in gold if g[1] in types}, {p for p in pred if p[1] in types}
    tp = len(gold & pred)
    precision, recall = (tp / len(pred) if pred else 0.0), (tp / len(gold) if gold else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def values(report: dict[str, Any]) -> dict[str, float]:
    return {k: report[k]["value"] for k in ("precision", "recall", "f1")}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medtrain.cli", "evaluate", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


# A prediction set: exact hits, a boundary miss, a wrong type, and nothing at all for c's fiebre.
PRED = {("a", "PROTEINAS", 0, 8), ("a", "ENFERMEDAD", 14, 20), ("b", "ENFERMEDAD", 0, 15), ("b", "PROTEINAS", 26, 32),
        ("b", "ENFERMEDAD", 16, 22), ("c", "PROTEINAS", 0, 11)}


def test_ann_only_predictions_score_as_a_set_count(tmp_path: Path) -> None:
    gold, pred = write_gold(tmp_path / "gold"), write_pred(tmp_path / "pred", PRED)
    report = evaluate(gold, pred, bootstrap=50)
    assert values(report) == pytest.approx(set_scores(gold_set(), PRED))
    for typ in ("PROTEINAS", "ENFERMEDAD", "ANATOMIA"):
        g, p = {x for x in gold_set() if x[1] == typ}, {x for x in PRED if x[1] == typ}
        row = report["per_type"][typ]
        assert {k: row[k] for k in ("precision", "recall", "f1")} == pytest.approx(set_scores(g, p))
        assert (row["support"], row["predicted"], row["correct"]) == (len(g), len(p), len(g & p))
    assert report["documents"] == 3 and report["units"] == 3 and report["bootstrap_unit"] == "document"
    assert report["bootstrap"] == {"n": 50, "seed": 0, "alpha": 0.05}
    lo, hi = report["f1"]["lo"], report["f1"]["hi"]
    assert lo <= report["f1"]["value"] <= hi


def test_defaults_are_fine_tunings_eval_settings(tmp_path: Path) -> None:
    report = evaluate(write_gold(tmp_path / "gold"), write_pred(tmp_path / "pred", PRED))
    default = EvalConfig()
    assert report["bootstrap"] == {"n": default.bootstrap, "seed": default.bootstrap_seed, "alpha": default.alpha}
    help_text = subprocess.run([sys.executable, "-m", "medtrain.cli", "evaluate", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    for option, value in (("--bootstrap", default.bootstrap), ("--bootstrap-seed", default.bootstrap_seed),
                          ("--alpha", default.alpha)):
        assert option in help_text and f"default {value}" in " ".join(help_text.split())


def test_a_gold_document_without_prediction_predicts_nothing_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gold, pred = write_gold(tmp_path / "gold"), write_pred(tmp_path / "pred", PRED, docs=("a", "b"))
    with caplog.at_level(logging.WARNING):
        report = evaluate(gold, pred, bootstrap=20)
    without_c = {p for p in PRED if p[0] != "c"}
    assert values(report) == pytest.approx(set_scores(gold_set(), without_c))
    assert report["documents_without_prediction"] == 1
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "1 of 3 gold documents have no prediction" in warning


def test_a_runs_own_predictions_with_txt_score_the_same(tmp_path: Path) -> None:
    gold = write_gold(tmp_path / "gold")
    with_txt = evaluate(gold, write_pred(tmp_path / "pred", PRED, txt=True), bootstrap=30)
    without = evaluate(gold, write_pred(tmp_path / "ann-only", PRED), bootstrap=30)
    assert {k: with_txt[k] for k in ("f1", "precision", "recall")} == {k: without[k] for k in ("f1", "precision",
                                                                                               "recall")}


def test_gold_with_a_slipped_annotation_is_scored_at_its_offsets_as_written(tmp_path: Path) -> None:
    gold = write_gold(tmp_path / "gold", {"a": GOLD["a"]})
    # fiebre is at 14-20; the .ann says 15-21, one character late, as PharmaCoNER's slips are.
    (gold / "a.ann").write_text("T1\tPROTEINAS 0 8\taspirina\nT2\tENFERMEDAD 15 21\tfiebre\n", encoding="utf-8")
    written = evaluate(gold, write_pred(tmp_path / "p1", {("a", "PROTEINAS", 0, 8), ("a", "ENFERMEDAD", 15, 21)},
                                        docs=("a",)), bootstrap=10)
    assert written["f1"]["value"] == 1.0
    true_place = evaluate(gold, write_pred(tmp_path / "p2", {("a", "PROTEINAS", 0, 8), ("a", "ENFERMEDAD", 14, 20)},
                                           docs=("a",)), bootstrap=10)
    assert true_place["f1"]["value"] == pytest.approx(0.5)


def test_label_map_and_types_score_only_the_named_shared_types(tmp_path: Path) -> None:
    gold, pred = write_gold(tmp_path / "gold"), write_pred(tmp_path / "pred", PRED)
    config = tmp_path / "finetune.yaml"  # a whole fine-tuning config: only its labels: section is read
    config.write_text(yaml.safe_dump({
        "output_dir": "runs/x", "task": "ner", "model": "models/m", "train": {"epochs": 2},
        "labels": {"map": {"es": {"PROTEINAS": "CHEM", "ENFERMEDAD": "DISO", "ANATOMIA": "ANAT"}},
                   "keep": ["CHEM", "DISO"], "strict": True}}))
    shared = {"PROTEINAS": "CHEM", "ENFERMEDAD": "DISO", "ANATOMIA": "ANAT"}

    def mapped(entities: set[Any]) -> set[Any]:
        return {(d, shared[t], s, e) for d, t, s, e in entities}

    report = evaluate(gold, pred, labels=load_labels(config), language="es", bootstrap=20)
    assert report["scored_types"] == ["CHEM", "DISO"]  # ANAT dropped by keep, in gold and predictions alike
    assert values(report) == pytest.approx(set_scores(mapped(gold_set()), mapped(PRED), {"CHEM", "DISO"}))
    only_disease = evaluate(gold, pred, labels=load_labels(config), language="es", types={"DISO"}, bootstrap=20)
    assert list(only_disease["per_type"]) == ["DISO"]
    assert values(only_disease) == pytest.approx(set_scores(mapped(gold_set()), mapped(PRED), {"DISO"}))
    # Predictions already in the shared space (a run's own) are scored the same, strict or not.
    shared_pred = write_pred(tmp_path / "shared", mapped(PRED))
    assert values(evaluate(gold, shared_pred, labels=load_labels(config), language="es", bootstrap=20)) == \
        pytest.approx(values(report))
    with pytest.raises(UserError, match="name GOLD's language with --language"):
        evaluate(gold, pred, labels=load_labels(config))
    (tmp_path / "bad.yaml").write_text("labels:\n  map: {es: {A: B}}\n  kep: [B]\n")
    with pytest.raises(UserError, match=r"bad.yaml:3: labels.kep: unknown key; did you mean keep"):
        load_labels(tmp_path / "bad.yaml")


# Column files: token and tag, -DOCSTART- documents. Synthetic text of test-0000: "aspirina cura fiebre alta\nos\n".
COLUMNS_GOLD = ("-DOCSTART-\naspirina B-CHEM\ncura O\nfiebre B-DISO\nalta I-DISO\n\nos B-ANAT\n\n"
                "-DOCSTART-\ndolor B-DISO\nfuerte O\n")
COLUMNS_PRED = ("-DOCSTART-\naspirina B-CHEM\ncura O\nfiebre B-DISO\nalta O\n\nos B-ANAT\n\n"
                "-DOCSTART-\ndolor O\nfuerte B-DISO\n")


def test_column_gold_with_predictions_in_the_same_column_format(tmp_path: Path) -> None:
    gold, pred = tmp_path / "test.conll", tmp_path / "system" / "out.conll"
    gold.write_text(COLUMNS_GOLD)
    pred.parent.mkdir()
    pred.write_text(COLUMNS_PRED)
    report = evaluate(gold, pred, bootstrap=20)  # a file: conll; one PRED file stands for the one GOLD file
    expected_gold = {("test-0000", "CHEM", 0, 8), ("test-0000", "DISO", 14, 25), ("test-0000", "ANAT", 26, 28),
                     ("test-0001", "DISO", 0, 5)}
    expected_pred = {("test-0000", "CHEM", 0, 8), ("test-0000", "DISO", 14, 20), ("test-0000", "ANAT", 26, 28),
                     ("test-0001", "DISO", 6, 12)}
    assert values(report) == pytest.approx(set_scores(expected_gold, expected_pred))
    assert report["format"] == report["pred_format"] == "conll" and report["documents"] == 2
    pred.write_text(COLUMNS_PRED.replace("fuerte", "muy fuerte"))
    with pytest.raises(UserError, match="document test-0001: its words differ from GOLD's"):
        evaluate(gold, pred)


def test_a_runs_predictions_folder_gives_its_results_json_numbers(tmp_path: Path) -> None:
    from medtrain.config import build_config
    from medtrain.finetune.config import FinetuneConfig
    from medtrain.finetune.ner import NerTask

    es = write_gold(tmp_path / "es")
    ro = tmp_path / "ro.conll"  # MoNERo's shape (token lemma tag POS), one document: bootstrap over sentences
    ro.write_text("aspirina\taspirina\tB-CHEM\tNOUN\nbun\tbun\tO\tADJ\n\nos\tos\tB-ANAT\tNOUN\nrupt\trupt\tO\tADJ\n")
    raw = {"output_dir": str(tmp_path / "run"), "task": "ner", "model": str(tmp_path / "model"),
           "data": {"format": "brat", "train": {"es": str(es)}, "dev": {"es": str(es)},
                    "test": {"es": str(es), "ro": {"path": str(ro), "format": "conll", "columns": {"tag": 2}}}},
           "labels": {"map": {"es": {"PROTEINAS": "CHEM", "ENFERMEDAD": "DISO", "ANATOMIA": "ANAT"}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    task = NerTask(build_config(FinetuneConfig, raw))
    tags = {"es": [["B-CHEM", "O", "B-DISO", "O"], ["B-DISO", "I-DISO", "I-DISO"], ["O", "O", "B-ANAT"],
                   ["B-CHEM", "O", "O"]],
            "ro": [["B-CHEM", "O"], ["O", "B-ANAT"]]}
    task.write_predictions(tags, {}, tmp_path / "run" / "predictions")
    ev = EvalConfig(bootstrap=200, bootstrap_seed=7, alpha=0.1)
    for lang, gold, extra in (("es", es, {}), ("ro", ro, {"tag": "2"})):
        part = task.parts["test"][lang]
        results = task._report(part, tags[lang], ev)  # what results.json test[lang] holds
        ours = evaluate(gold, tmp_path / "run" / "predictions" / lang, labels=load_labels(tmp_path / "config.yaml"),
                        language=lang, types=set(results["scored_types"]), bootstrap=ev.bootstrap,
                        seed=ev.bootstrap_seed, alpha=ev.alpha, **extra)
        for key in ("f1", "precision", "recall", "recall_ceiling", "bootstrap_unit", "scored_types", "micro"):
            assert ours[key] == results[key], (lang, key)
        for typ, row in results["per_type"].items():
            assert {k: ours["per_type"][typ][k] for k in row} == row
    assert ours["bootstrap_unit"] == "sentence"


def test_json_holds_what_stdout_shows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = write_gold(tmp_path / "gold"), write_pred(tmp_path / "pred", PRED)
    out = tmp_path / "scores" / "report.json"
    assert run(["evaluate", str(gold), str(pred), "--bootstrap", "40", "--json", str(out)]) == 0
    shown = capsys.readouterr()
    report = json.loads(out.read_text())
    assert SECRET not in shown.out + shown.err
    rows = {line.split()[0]: line.split()[1:] for line in shown.out.splitlines() if line.split()}
    for name in ("precision", "recall", "f1"):
        assert [float(x) for x in rows[name]] == pytest.approx([report[name][k] for k in ("value", "lo", "hi")],
                                                               abs=5e-5)
    for typ, scores in report["per_type"].items():
        p, r, f, support, predicted, correct = rows[typ]
        assert [float(p), float(r), float(f)] == pytest.approx([scores["precision"], scores["recall"],
                                                                scores["f1"]], abs=5e-5)
        assert [int(support), int(predicted), int(correct)] == [scores["support"], scores["predicted"],
                                                                scores["correct"]]
    assert float(rows["ceiling:"][0]) == pytest.approx(report["recall_ceiling"], abs=5e-5)
    assert rows["micro"][3:] == [str(len(gold_set())), str(len(PRED)), str(len(gold_set() & PRED))]
    assert f"documents: {report['documents']} (0 without a prediction); bootstrap units: {report['units']} " \
           "(documents)" in shown.out
    assert shown.out.rstrip().endswith(f"wrote {out}")


def one_error(returncode: int, stderr: str, stdout: str = "") -> str:
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and SECRET not in stderr + stdout
    return lines[0]


def test_missing_pred_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = cli(write_gold(tmp_path / "gold"), tmp_path / "nowhere", "--json", out)
    line = one_error(result.returncode, result.stderr, result.stdout)
    assert line == f"error: {tmp_path / 'nowhere'}: PRED not found"
    assert not out.exists() and not list(tmp_path.glob(".report.json.*"))


def test_a_predicted_document_not_in_gold_exits_2_naming_it(tmp_path: Path) -> None:
    pred = write_pred(tmp_path / "pred", PRED)
    (pred / "zz-extra.ann").write_text("")
    out = tmp_path / "report.json"
    result = cli(write_gold(tmp_path / "gold"), pred, "--json", out)
    line = one_error(result.returncode, result.stderr, result.stdout)
    assert line.startswith(f"error: {pred / 'zz-extra.ann'}: predicted document zz-extra is not in GOLD")
    assert not out.exists() and result.stdout == ""


@pytest.mark.parametrize("bad", ["T3\tPROTEINAS 0\n", "T3\tPROTEINAS 5 2\n", "T3\tPROTEINAS\n", "T3 PROTEINAS 0 8\n"])
def test_a_malformed_ann_line_exits_2_at_its_file_and_line(tmp_path: Path, bad: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    pred = write_pred(tmp_path / "pred", PRED)
    (pred / "c.ann").write_text(f"T1\tPROTEINAS 0 11\t{SECRET}\n#1\tAnnotatorNotes T1\tnote\n{bad}")
    out = tmp_path / "report.json"
    returncode = run(["evaluate", str(write_gold(tmp_path / "gold")), str(pred), "--json", str(out)])
    shown = capsys.readouterr()
    assert one_error(returncode, shown.err, shown.out).startswith(f"error: {pred / 'c.ann'}:3: entity ")
    assert not out.exists()
