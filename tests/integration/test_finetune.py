"""`medtrain finetune` for real on the sample data with a tiny BERT: NER (BRAT, CoNLL-U), screening, resume, errors.

The model folder stands for a pretraining export: a BertForMaskedLM saved with `save_pretrained` plus the sample
tokenizer's files. Runs are 1-3 epochs at max_length 64, a few seconds each on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from medtrain.cli import run
from medtrain.data import ner
from medtrain.data.ner_format import ColumnFormat
from medtrain.data.sample import write_sample_data

from _sample_types import DUTCH_TO_SHARED, SHARED_TYPES, SPANISH_TO_SHARED

pytestmark = pytest.mark.integration

SCALE = 0.3  # 10 NER documents and 18 patients per language in train
NER_ARGS = ["task=ner", "data.format=brat", "train.epochs=3", "train.lr=5e-3", "train.batch_size=8",
            "train.max_length=64", "progress=false"]
KILL_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample data, with a slip added to the Spanish test gold as real releases have them: the first
    annotation of its first document starts and ends one character late (the training slips are the sample's)."""
    out = tmp_path_factory.mktemp("finetune") / "data"
    write_sample_data(out, seed=0, scale=SCALE)
    ann = sorted((out / "ner" / "es" / "test").glob("*.ann"))[0]
    lines = ann.read_text(encoding="utf-8").split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("T") and ";" not in line.split("\t")[1])
    ident, (kind, start, end), surface = lines[first].split("\t")[0], lines[first].split("\t")[1].split(), \
        lines[first].split("\t")[2]
    lines[first] = f"{ident}\t{kind} {int(start) + 1} {int(end) + 1}\t{surface}"
    ann.write_text("\n".join(lines), encoding="utf-8")
    return out


def ann_as_written(folder: Path) -> list[tuple[str, str, tuple[tuple[int, int], ...]]]:
    """(document, type, fragments) of every T line of a BRAT folder's .ann files, parsed here, as the shared
    tasks' scorers read them: offsets as written, the .txt never looked at."""
    out = []
    for ann in sorted(folder.glob("*.ann")):
        for line in ann.read_text(encoding="utf-8").splitlines():
            if line.startswith("T"):
                kind, _, offsets = line.split("\t")[1].partition(" ")
                fragments = tuple(tuple(int(x) for x in part.split()) for part in offsets.split(";"))
                out.append((ann.stem, kind, fragments))
    return out


@pytest.fixture(scope="module")
def model_dir(data: Path) -> Path:
    """A tiny BERT folder as a pretraining export would leave it: MLM weights, config and tokenizer files."""
    out = data.parent / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(str(out))
    for file in (data / "tokenizer").iterdir():
        shutil.copy2(file, out / file.name)
    return out


def write_config(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def ro_split(data: Path) -> Path:
    """The Romanian CoNLL-U file (MoNERo as UD publishes it) cut by `medtrain split`, as `make demo` cuts it."""
    out = data / "ner" / "ro" / "split"
    assert run(["split", str(data / "ner" / "ro" / "monero.conllu"), str(out), "--by", "sentence",
                "--order", "source", "--ratios", "0.6,0.2,0.2"]) == 0
    return out


def ner_config(tmp: Path, data: Path, model_dir: Path, out: Path, ro_split: Path) -> Path:
    """Train on Spanish PharmaCoNER-style BRAT, test on it and on Romanian CoNLL-U (tags in MISC), both mapped to
    MoNERo's types."""
    ner_dir = data / "ner"
    ro = {"path": str(ro_split / "test.conllu"), "format": "conllu", "columns": {"tag": "misc:BioNERLabel"},
          "discontinuous": "join"}
    return write_config(tmp / "ner.yaml", {
        "output_dir": str(out), "task": "ner", "model": str(model_dir),
        "data": {"format": "brat", "train": str(ner_dir / "es" / "train"), "dev": str(ner_dir / "es" / "dev"),
                 "test": {"es": str(ner_dir / "es" / "test"), "ro": ro}},
        "labels": {"map": {"es": SPANISH_TO_SHARED}, "keep": SHARED_TYPES}})


def finetune(config: Path, *overrides: str) -> int:
    return run(["finetune", str(config), *NER_ARGS, *overrides])


def check_interval(report: dict[str, Any], names: tuple[str, ...]) -> None:
    """Each metric is {value, lo, hi} in [0, 1] with lo <= value <= hi, or all null with a reason."""
    for name in names:
        interval = report[name]
        assert set(interval) == {"value", "lo", "hi"}, name
        if interval["value"] is None:  # e.g. precision with no predicted positives among 6 test patients
            assert interval["lo"] is None and interval["hi"] is None and name in report["reasons"], name
            continue
        assert 0.0 <= interval["lo"] <= interval["value"] <= interval["hi"] <= 1.0, (name, interval)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def exact_offset_f1(run_dir: Path, lang: str, types: list[str]) -> float:
    """Strict F1 computed here, independently of medtrain's scorer: the run's predicted .ann files against the
    gold ((document, type, fragments) sets, on the scored types): BRAT gold parsed here with its offsets as
    written, as the shared task's scorer reads it; CoNLL-U and column-file gold as the reader gives it (offsets
    into `# text`, or into the column document's synthetic text)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    source = config["data"]["test"][lang]
    mapping = config["labels"]["map"].get(lang, {})

    def kept(triples: Any, rename: dict[str, str]) -> set[tuple[str, str, tuple]]:
        return {(doc, rename.get(kind, kind), fragments) for doc, kind, fragments in triples
                if rename.get(kind, kind) in types}

    if isinstance(source, dict) or Path(source).is_file():  # CoNLL-U (tags in MISC) or a column file
        path, fmt, columns = (source["path"], "conllu", ColumnFormat(tag=source["columns"]["tag"],
                                                                     discontinuous=source["discontinuous"])) \
            if isinstance(source, dict) else (source, "conll", ColumnFormat())
        gold = kept(((d.doc_id, e.type, e.fragments) for d in ner.read_ner(path, fmt, columns)
                     for e in d.entities), mapping)
    else:
        gold = kept(ann_as_written(Path(source)), mapping)
    predicted = kept(ann_as_written(run_dir / "predictions" / lang), {})
    correct = len(gold & predicted)
    return 2 * correct / (len(gold) + len(predicted)) if gold or predicted else 0.0


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory: pytest.TempPathFactory, data: Path, model_dir: Path, ro_split: Path) -> Path:
    """An uninterrupted NER run (train es, test es + ro), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("ner")
    assert finetune(ner_config(tmp, data, model_dir, tmp / "run", ro_split)) == 0
    return tmp / "run"


def test_ner_brat_results_predictions_and_tensorboard(ner_run: Path) -> None:
    out = results(ner_run)
    assert out["task"] == "ner" and out["train_languages"] == ["es"] and out["eval_languages"] == ["es", "ro"]
    assert out["seed"] == 0 and out["best_epoch"] in (1, 2, 3) and out["train_time_s"] > 0
    assert out["labels"][0] == "O" and out["hparams"]["lr"] == pytest.approx(5e-3)
    assert out["test"]["es"]["f1"]["value"] > 0  # even this tiny, unpretrained model learns something in-language
    assert out["labels"] == ["O", *(f"{p}-{t}" for t in SHARED_TYPES for p in "BI")]  # the mapped space
    for lang in ("es", "ro"):
        report = out["test"][lang]
        check_interval(report, ("f1", "precision", "recall", "word_f1", "word_precision", "word_recall"))
        assert report["f1"]["value"] == report["micro"]["f1"] and report["metric"].startswith("exact-offset")
        assert {"f1", "precision", "recall"} <= set(report["macro"]) and set(report["per_type"]) <= set(SHARED_TYPES)
        assert report["scored_types"] == SHARED_TYPES and report["unscored_types"] == []
        assert report["f1"]["value"] == pytest.approx(exact_offset_f1(ner_run, lang, report["scored_types"]))
        docs = ner.read_ner(ner_run / "predictions" / lang, "brat")  # .ann + .txt parse back
        assert len(docs) == out["sizes"]["test"][lang]["documents"]
    assert out["test"]["es"]["bootstrap_unit"] == "document"
    assert out["test"]["ro"]["bootstrap_unit"] == ("document" if out["sizes"]["test"]["ro"]["documents"] > 1
                                                   else "sentence")
    assert out["reading"]["test"]["ro"]["discontinuous"] == "join" and out["reading"]["test"]["es"]["format"] == "brat"
    assert out["label_space"]["train"] == SHARED_TYPES
    tags = scalars(ner_run)
    steps = -(-out["sizes"]["train"]["es"]["sequences"] // 8)  # per epoch, at batch size 8
    assert [step for step, _ in tags["eval/f1"]] == [steps, 2 * steps, 3 * steps]
    assert {"eval/precision", "eval/recall", "train/loss", "train/learning_rate"} <= set(tags)
    assert not {tag for tag in tags if tag.startswith("dev/")} and "train/lr" not in tags  # the HF Trainer's names
    # train/epoch is the fractional epoch at each logged step: the last step of epoch e reads e
    assert [value for step, value in tags["train/epoch"] if step % steps == 0] == [1.0, 2.0, 3.0]
    assert all(abs(value - step / steps) < 1e-6 for step, value in tags["train/epoch"])
    history = [json.loads(line) for line in (ner_run / "history.jsonl").read_text().splitlines()]
    assert {"train/loss", "train/learning_rate", "train/epoch"} <= set(history[0])  # history.jsonl: the same names
    assert [r["step"] for r in history if "eval/f1" in r] == [steps, 2 * steps, 3 * steps]
    assert not (ner_run / "checkpoint").exists()  # a complete run keeps no optimizer state
    assert (ner_run / "config.yaml").is_file()


def mismatched_annotations(folder: Path) -> int:
    """T lines whose surface is not the .txt at their written offsets (whitespace-insensitive), counted here."""
    count = 0
    for ann in folder.glob("*.ann"):
        text = ann.with_suffix(".txt").read_text(encoding="utf-8")
        for line in ann.read_text(encoding="utf-8").splitlines():
            if line.startswith("T"):
                offsets, surface = line.split("\t")[1].partition(" ")[2], line.split("\t")[2]
                spans = [tuple(int(x) for x in part.split()) for part in offsets.split(";")]
                count += " ".join(text[a:b] for a, b in spans).split() != surface.split()
    return count


def test_annotation_slips_train_and_test_gold_is_scored_as_written(ner_run: Path, data: Path) -> None:
    """The sample's slipped training annotations are repaired or skipped and counted; the test gold's slip is
    counted and scored where the .ann puts it (exact_offset_f1 above parses the .ann itself)."""
    reading = results(ner_run)["reading"]
    train = reading["train"]["es"]
    slipped = mismatched_annotations(data / "ner" / "es" / "train")
    assert slipped >= 2 and train["offset_mismatch"] == "repair"
    assert train["repaired"] + train["skipped_annotations"] == slipped and train["skipped_annotations"] >= 1
    assert train["as_written"] == 0
    test = reading["test"]["es"]
    assert test["as_written"] == mismatched_annotations(data / "ner" / "es" / "test") == 1
    assert test["repaired"] == test["skipped_annotations"] == 0


def test_conllu_predictions_keep_the_corpus_text_and_fields(ner_run: Path, ro_split: Path) -> None:
    """Every `# text` is in the predictions' .txt verbatim, and the CoNLL-U copy differs from the test file only
    in the BioNERLabel key of MISC."""
    gold = (ro_split / "test.conllu").read_text(encoding="utf-8").splitlines()
    texts = "".join(p.read_text(encoding="utf-8") for p in (ner_run / "predictions" / "ro").glob("*.txt"))
    sentences = [line.removeprefix("# text = ") for line in gold if line.startswith("# text = ")]
    assert sentences and all(sentence in texts for sentence in sentences)
    copy = (ner_run / "predictions" / "ro" / "test.conllu").read_text(encoding="utf-8").splitlines()
    assert len(copy) == len(gold)

    def without_tag(line: str) -> str:
        fields = line.split("\t")
        if len(fields) != 10:
            return line
        misc = [kv for kv in fields[9].split("|") if not kv.startswith("BioNERLabel=") and kv != "_"]
        return "\t".join([*fields[:9], "|".join(misc) or "_"])

    assert [without_tag(line) for line in copy] == [without_tag(line) for line in gold]
    predicted = {kv for line in copy for kv in line.split("\t")[-1].split("|") if kv.startswith("BioNERLabel=")}
    assert predicted <= {f"BioNERLabel={p}-{t}" for t in SHARED_TYPES for p in "BI"}


def test_evaluate_on_a_runs_predictions_equals_its_results(ner_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`medtrain evaluate GOLD PRED` with the run's reading options gives results.json's numbers, intervals too."""
    out = results(ner_run)
    config = yaml.safe_load((ner_run / "config.yaml").read_text(encoding="utf-8"))
    labels = tmp_path / "labels.yaml"
    labels.write_text(yaml.safe_dump({"labels": config["labels"]}), encoding="utf-8")
    for lang, source in config["data"]["test"].items():
        report = out["test"][lang]
        gold = ["--format", "conllu", "--tag", source["columns"]["tag"], "--discontinuous", "join",
                source["path"]] if isinstance(source, dict) else [source]
        command = ["evaluate", *gold[-1:], str(ner_run / "predictions" / lang), *gold[:-1],
                   "--labels", str(labels), "--language", lang, "--types", ",".join(report["scored_types"]),
                   "--bootstrap", str(config["eval"]["bootstrap"]), "--json", str(tmp_path / f"{lang}.json")]
        assert run(command) == 0, capsys.readouterr().err
        scored = json.loads((tmp_path / f"{lang}.json").read_text(encoding="utf-8"))
        for name in ("f1", "precision", "recall"):
            assert scored[name] == report[name], (lang, name)
        assert {t: {k: row[k] for k in report["per_type"][t]} for t, row in scored["per_type"].items()} == \
            report["per_type"]  # evaluate's rows also count predicted and correct entities


def test_rerun_of_a_complete_run_does_nothing(ner_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (ner_run / "results.json").stat().st_mtime_ns
    assert finetune(ner_run.parent / "ner.yaml") == 0
    assert "already complete" in capsys.readouterr().out
    assert (ner_run / "results.json").stat().st_mtime_ns == before


def test_killed_run_resumes_to_the_same_results(ner_run: Path, tmp_path: Path, data: Path,
                                                model_dir: Path, ro_split: Path) -> None:
    """SIGKILL once the epoch-1 checkpoint exists; the rerun resumes at epoch 2 and matches the reference."""
    out = tmp_path / "run"
    config = ner_config(tmp_path, data, model_dir, out, ro_split)
    command = [sys.executable, "-m", "medtrain.cli", "finetune", str(config), *NER_ARGS]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not (out / "checkpoint" / "last.pt").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no epoch-1 checkpoint in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
    cached = {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}
    assert len(cached) == 4  # train, dev, test es, test ro
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=KILL_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()} == cached  # not tokenized again
    assert "resuming" in resumed.stderr and "after epoch 1 of 3" in resumed.stderr
    got, want = results(out), results(ner_run)
    for key in ("test", "dev", "best_epoch", "labels", "sizes"):
        assert got[key] == want[key], key
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (ner_run / "history.jsonl").read_text().splitlines()]
    assert history == reference
    assert scalars(out)["eval/f1"] == scalars(ner_run)["eval/f1"]


def test_screening(tmp_path: Path, data: Path, model_dir: Path) -> None:
    screening = data / "screening" / "nl"
    config = write_config(tmp_path / "screening.yaml", {
        "output_dir": str(tmp_path / "run"), "task": "screening", "model": str(model_dir),
        "data": {"format": "jsonl", "train": str(screening / "train.jsonl"), "dev": str(screening / "dev.jsonl"),
                 "test": str(screening / "test.jsonl")},
        "train": {"epochs": 2, "lr": 3e-3, "batch_size": 32, "max_length": 64},
        "screening": {"aggregate": "max"}, "save_model": True, "progress": False})  # stride: the default
    assert run(["finetune", str(config)]) == 0
    out = results(tmp_path / "run")
    assert out["eval_languages"] == ["nl"] and out["bootstrap"]["unit"] == "patient"
    assert out["hparams"]["screening"]["stride"] == 31  # unset: half of the 62-token window content
    report = out["test"]["nl"]
    check_interval(report, ("f1", "precision", "recall", "auroc", "auprc"))
    assert report["threshold"] == out["dev"]["threshold"]
    assert sum(report["confusion_matrix"].values()) == out["sizes"]["test"]["nl"]["patients"]
    assert out["sizes"]["train"]["nl"]["windows"] > out["sizes"]["train"]["nl"]["notes"]  # long notes split
    rows = (tmp_path / "run" / "predictions" / "nl.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "patient_id,score,predicted,label" and len(rows) == 1 + report["confusion_matrix"]["tp"] + \
        report["confusion_matrix"]["fp"] + report["confusion_matrix"]["tn"] + report["confusion_matrix"]["fn"]
    assert {"eval/f1", "eval/auroc", "eval/threshold"} <= set(scalars(tmp_path / "run"))
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_conll_mixed_training_and_a_type_only_in_evaluation(tmp_path: Path, data: Path, model_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Train on es + nl column files mapped to shared types. A test set with a type training never saw is scored
    on the shared types only and names the other; a test set that shares no type with training is an error
    before anything trains."""
    ner_dir = data / "ner"
    rare = tmp_path / "nl-rare.conll"
    rare.write_text((ner_dir / "nl" / "test.conll").read_text(encoding="utf-8").replace("-Medicatie", "-RARE"),
                    encoding="utf-8")
    config = write_config(tmp_path / "conll.yaml", {
        "output_dir": str(tmp_path / "run"), "task": "ner", "model": str(model_dir),
        "data": {"format": "conll",
                 "train": {lang: str(ner_dir / lang / "train.conll") for lang in ("es", "nl")},
                 "dev": {lang: str(ner_dir / lang / "dev.conll") for lang in ("es", "nl")},
                 "test": {"es": str(ner_dir / "es" / "test.conll"), "nl": str(rare)}},
        "labels": {"map": {"es": SPANISH_TO_SHARED, "nl": DUTCH_TO_SHARED}}})
    assert finetune(config, "data.format=conll", "train.epochs=1") == 0
    out = results(tmp_path / "run")
    assert out["train_languages"] == ["es", "nl"] and set(out["sizes"]["train"]) == {"es", "nl"}
    assert {"f1", "f1_es", "f1_nl", "word_f1"} <= set(out["dev"])  # pooled, and per dev language
    assert "B-RARE" not in out["labels"] and out["label_space"]["train"] == SHARED_TYPES
    assert out["test"]["nl"]["unscored_types"] == ["RARE"] and out["test"]["es"]["unscored_types"] == []
    assert "CHEM" not in out["test"]["nl"]["scored_types"] and "RARE" not in out["test"]["nl"]["per_type"]
    check_interval(out["test"]["nl"], ("f1", "precision", "recall"))
    for lang in ("es", "nl"):  # column documents are scored on exact offsets too, in their synthetic text
        report = out["test"][lang]
        assert report["f1"]["value"] == pytest.approx(exact_offset_f1(tmp_path / "run", lang, report["scored_types"]))

    only_rare = tmp_path / "only-rare.conll"
    only_rare.write_text(re.sub(r"([BI])-\w+", r"\1-RARE", rare.read_text(encoding="utf-8")), encoding="utf-8")
    capsys.readouterr()
    assert finetune(config, "data.format=conll", f"data.test.nl={only_rare}", f"output_dir={tmp_path / 'bad'}") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "data.test.nl" in err and "RARE" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("overrides, message", [
    (["data.test.ro=/nonexistent/ro/test"], "data.test.ro: folder of .txt/.ann files not found"),
    (["data.format=jsonl"], "data.format jsonl does not fit task ner"),
    (["model=MODEL_WITHOUT_CONFIG"], r"not a Hugging Face model folder \(no config\.json\)"),
    (["data.test.ro.columns.tag=upos"], r"test\.conllu:\d+: .*not an IOB2 tag"),  # the UPOS field named as the tag
    (["labels.strict=true", "labels.map.es={NORMALIZABLES: CHEM}"],
     r"\.ann:\d+: entity type \w+ has no entry in labels\.map\.es"),
], ids=["missing-test-folder", "format-misfits-task", "model-without-config", "tag-column-is-pos", "strict-unmapped"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, data: Path, model_dir: Path, ro_split: Path,
                                                  capsys: pytest.CaptureFixture[str], overrides: list[str],
                                                  message: str) -> None:
    broken = tmp_path / "no-config"
    broken.mkdir()
    out = tmp_path / "run"
    config = ner_config(tmp_path, data, model_dir, out, ro_split)
    assert finetune(config, *(o.replace("MODEL_WITHOUT_CONFIG", str(broken)) for o in overrides)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and re.search(message, err), err
    assert not out.exists()


def test_unfinished_run_refuses_another_config(ner_run: Path, tmp_path: Path, data: Path, model_dir: Path,
                                               ro_split: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    shutil.copy2(ner_run / "config.yaml", out / "config.yaml")  # another output_dir: the configs differ
    (out / "checkpoint" / "last.pt").write_bytes(b"")
    assert finetune(ner_config(tmp_path, data, model_dir, out, ro_split)) == 2
    assert "different config.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["finetune-ner", "finetune-screening"])
def test_packaged_recipes_build(recipe: str) -> None:
    from medtrain.config import load_config
    from medtrain.finetune import FinetuneConfig

    cfg = load_config(FinetuneConfig, recipe)
    assert cfg.task == recipe.removeprefix("finetune-") and len(cfg.data.test) == 3
