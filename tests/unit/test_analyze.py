"""`medtrain analyze` on the sample data: the measures are sane, deterministic, and show the designed gap
between clinical and general corpora."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import yaml
from transformers import BertConfig, BertForMaskedLM

from medtrain.cli import run
from medtrain.data.sample import write_sample_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("analyze") / "data"
    write_sample_data(out, seed=1, scale=0.3)
    return out


def tiny_model(data: Path, out: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    vocab = len(json.loads((data / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"])
    BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(str(out))
    return out


def test_analysis_tables_and_plots(data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model_a = tiny_model(data, tmp_path / "a", seed=0)
    shutil.copytree(model_a, tmp_path / "a_copy")
    config = {
        "output_dir": str(tmp_path / "report"),
        "tokenizer": str(data / "tokenizer"),
        "corpora": [{"name": f"{d}_nl", "path": str(data / "corpora" / f"{d}_nl.jsonl"), "language": "nl",
                     "domain": d} for d in ("clinical", "general")],
        "tasks": [{"name": "screening_nl", "kind": "screening", "format": "jsonl", "language": "nl",
                   "path": str(data / "screening" / "nl" / "train.jsonl")},
                  {"name": "ner_nl", "kind": "ner", "format": "brat", "language": "nl",
                   "path": str(data / "ner" / "nl" / "train")}],
        "models": {"a": str(model_a), "a_copy": str(tmp_path / "a_copy"),
                   "b": str(tiny_model(data, tmp_path / "b", seed=1))},
        "max_documents": 40, "perplexity_sequences": 8, "seq_len": 64,
    }
    path = tmp_path / "analyze.yaml"
    path.write_text(yaml.safe_dump(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(["analyze", str(path)]) == 0
    printed = capfd.readouterr()
    assert "Loading weights" not in printed.out + printed.err  # models load through model.load_pretrained
    assert not [w for w in caught if "matplotlib" in w.filename], [str(w.message) for w in caught]
    result = json.loads((tmp_path / "report" / "analysis.json").read_text())
    for row in result["tokenizer"].values():
        assert 1.0 <= row["fertility"] < 5 and 0 <= row["unk_rate"] < 0.05 and row["documents"] > 0
    for task in ("screening_nl", "ner_nl"):
        clinical, general = result["overlap"]["clinical_nl"][task], result["overlap"]["general_nl"][task]
        assert clinical["token_coverage"] > general["token_coverage"] + 0.1
        assert clinical["ngram_token_coverage"] > general["ngram_token_coverage"]
        assert all(0 <= v <= 1 for v in clinical.values())
    ppl = result["perplexity"]
    assert ppl["a"] == ppl["a_copy"]  # fixed masks: the same weights give the same figure
    assert ppl["a"] != ppl["b"] and all(math.isfinite(v) and v > 1 for r in ppl.values() for v in r.values())
    report = (tmp_path / "report" / "analysis.md").read_text()
    assert "subwords per word" in report and "perplexity" in report
    assert (tmp_path / "report" / "overlap.png").stat().st_size > 1000
    assert (tmp_path / "report" / "perplexity.png").stat().st_size > 1000


def test_task_format_must_fit_kind(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path), "tokenizer": str(data / "tokenizer"), "corpora": [],
                                    "tasks": [{"name": "x", "kind": "ner", "format": "jsonl", "language": "nl",
                                               "path": str(data)}]}))
    assert run(["analyze", str(path)]) == 2
