"""`medtrain finetune` for real on the sample data with a tiny BERT: NER (BRAT, CoNLL), screening, resume, errors.

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
    out = tmp_path_factory.mktemp("finetune") / "data"
    write_sample_data(out, seed=0, scale=SCALE)
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
    """The MoNERo-shaped Romanian file cut by `medtrain split`, as `make demo` cuts it."""
    out = data / "ner" / "ro" / "split"
    assert run(["split", str(data / "ner" / "ro" / "monero.tsv"), str(out), "--by", "sentence",
                "--order", "source", "--ratios", "0.6,0.2,0.2"]) == 0
    return out


def ner_config(tmp: Path, data: Path, model_dir: Path, out: Path, ro_split: Path) -> Path:
    """Train on Spanish PharmaCoNER-style BRAT, test on it and on Romanian MoNERo-style columns, both mapped to
    MoNERo's types."""
    ner_dir = data / "ner"
    ro = {"path": str(ro_split / "test.tsv"), "format": "conll", "columns": {"token": 0, "tag": 2},
          "separator": "tab", "short_lines": "skip", "discontinuous": "join"}
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
    gold entities as the run read them ((document, type, fragments) sets, on the scored types)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    source = config["data"]["test"][lang]
    columns = None
    if isinstance(source, dict):
        columns = ColumnFormat(token=source["columns"]["token"], tag=source["columns"]["tag"],
                               separator=source["separator"], short_lines=source["short_lines"],
                               discontinuous=source["discontinuous"])
        source = source["path"]
    mapping = config["labels"]["map"].get(lang, {})

    def entities(docs: list[ner.NerDocument], rename: dict[str, str]) -> set[tuple[str, str, tuple]]:
        return {(d.doc_id, rename.get(e.type, e.type), e.fragments) for d in docs for e in d.entities
                if rename.get(e.type, e.type) in types}

    gold = entities(ner.read_ner(source, config["data"]["format"] if columns is None else "conll", columns), mapping)
    predicted = entities(ner.read_ner(run_dir / "predictions" / lang, "brat"), {})
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
    assert out["test"]["ro"]["bootstrap_unit"] == "sentence"  # one column file with no document markers
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
    (["data.test.ro.columns.tag=3"], r"test\.tsv:\d+: column 3 is not an IOB2 tag"),  # MoNERo's POS column
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
