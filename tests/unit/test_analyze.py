"""`medtrain analyze` on the sample data: the measures are sane, deterministic, and show the designed gap
between clinical and general corpora. On tiny hand-made inputs: fertility per tokenizer, pretraining-mix coverage,
perplexity with each model's own tokenizer, and the rank correlations that link the measures to the gains."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from transformers import BertConfig, BertForMaskedLM

from medtrain.cli import run
from medtrain.data.corpus import CorpusConfig
from medtrain.data.sample import write_sample_data
from medtrain.data.tokenizer import load_tokenizer, train_wordpiece
from medtrain.study.analysis import AnalyzeConfig, TaskText, analyze, linkage, perplexity, spearman, task_texts


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


# ----------------------------------------------------------------------------- tiny inputs, hand-computed answers

GENERAL = ["the weather is warm and the match starts at noon", "the team won the match in the rain"]
CLINICAL = ["the patient has cardiomyopathy and hypertension", "hypertension with tachycardia was treated"]
NOTE = "the patient has tachycardia and hypertension in the rain today"  # today: in no corpus


def tiny_inputs(tmp_path: Path, notes: int = 1) -> tuple[list[CorpusConfig], TaskText]:
    corpora = []
    for name, docs in (("general", GENERAL), ("clinical", CLINICAL)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs * 3), encoding="utf-8")
        corpora.append(CorpusConfig(name=name, path=path, language="en", domain=name))
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"patient_id": f"p{i}", "note_id": f"p{i}-1", "text": NOTE, "label": i % 2})
                            + "\n" for i in range(notes)), encoding="utf-8")
    return corpora, TaskText(name="screening/en/test", kind="screening", format="jsonl", language="en", path=task,
                             split="test")


def test_spearman_ranks_ties_by_their_mean() -> None:
    # ranks of x: 1, 2.5, 2.5, 4 (a tie); of y: 1, 2, 3, 4; Pearson of the ranks, by hand: 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None  # too few points
    assert spearman([1, 2, 3], [5, 5, 5]) is None  # a constant side has no ranks to correlate
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


def test_linkage_signs_and_the_small_n_caveat() -> None:
    def rows(n: int) -> list[dict]:
        return [{"variant": f"v{i}", "task": "ner", "pair": "ro → es", "gain": float(i),
                 "perplexity_change": -2.0 * i, "coverage": 0.1 * i + (0.5 if i == 0 else 0)} for i in range(n)]

    few = linkage(rows(3))
    assert few["n"] == 3 and few["gain_vs_perplexity"] == pytest.approx(-1.0)
    # coverage ranks 3, 1, 2 against gain ranks 1, 2, 3: centred (1, -1, 0) . (-1, 0, 1) / 2 = -0.5
    assert few["gain_vs_coverage"] == pytest.approx(-0.5)
    assert few["caveat"].startswith("n < 8")
    many = linkage(rows(8))
    assert many["n"] == 8 and many["caveat"] is None
    assert linkage(rows(2))["gain_vs_perplexity"] is None


def test_fertility_per_tokenizer_before_and_after_extension(tmp_path: Path) -> None:
    corpora, task = tiny_inputs(tmp_path)
    # base: only the general words whole, clinical words in fragments; extended: every word whole
    train_wordpiece(GENERAL + CLINICAL, tmp_path / "base", vocab_size=90, whole_word_texts=GENERAL)
    train_wordpiece(GENERAL + CLINICAL, tmp_path / "extended", vocab_size=1000)
    cfg = AnalyzeConfig(output_dir=tmp_path / "out", tokenizer=tmp_path / "base", corpora=corpora, tasks=[task],
                        tokenizers={"extended": tmp_path / "extended"})
    result = analyze(cfg)
    base, extended = load_tokenizer(tmp_path / "base"), load_tokenizer(tmp_path / "extended")

    def by_hand(tokenizer: Any, texts: list[str]) -> float:
        words = [w for t in texts for w in t.split()]
        return sum(len(tokenizer.tokenize(w)) for w in words) / len(words)

    assert set(result["fertility"]) == {"base", "extended"}
    assert result["fertility"]["base"] == {name: row["fertility"] for name, row in result["tokenizer"].items()}
    assert result["fertility"]["base"]["general"] == 1.0
    assert result["fertility"]["base"]["clinical"] == pytest.approx(by_hand(base, CLINICAL))
    assert by_hand(base, CLINICAL) > 1.2
    assert result["fertility"]["base"]["screening/en/test"] == pytest.approx(by_hand(base, [NOTE]))
    assert result["fertility"]["extended"]["general"] == result["fertility"]["extended"]["clinical"] == 1.0
    assert result["fertility"]["extended"]["screening/en/test"] == pytest.approx(by_hand(extended, [NOTE]))
    assert by_hand(extended, [NOTE]) < by_hand(base, [NOTE])
    report = (tmp_path / "out" / "analysis.md").read_text()
    assert "before and after vocabulary extension" in report
    assert "| base | extended |" in report
    with pytest.raises(ValueError, match="base"):
        AnalyzeConfig(output_dir=tmp_path, tokenizer=tmp_path / "base", corpora=[], tasks=[],
                      tokenizers={"base": tmp_path / "extended"})


def test_mix_coverage_is_the_union_of_the_models_corpora(tmp_path: Path) -> None:
    corpora, task = tiny_inputs(tmp_path)
    train_wordpiece(GENERAL + CLINICAL, tmp_path / "tok", vocab_size=1000)
    cfg = AnalyzeConfig(output_dir=tmp_path / "out", tokenizer=tmp_path / "tok", corpora=corpora, tasks=[task],
                        mixtures={"baseline": [], "general_only": ["general"], "staged": ["general", "clinical"]})
    coverage = analyze(cfg)["mix_coverage"]
    # the note's 10 running words: general has the, and, in, the, rain (5); clinical adds patient, has,
    # tachycardia, hypertension (9); no corpus has today
    assert coverage["baseline"]["screening/en/test"] == 0.0
    assert coverage["general_only"]["screening/en/test"] == pytest.approx(5 / 10)
    assert coverage["staged"]["screening/en/test"] == pytest.approx(9 / 10)
    assert "pretraining mix" in (tmp_path / "out" / "analysis.md").read_text()
    with pytest.raises(ValueError, match="mixtures.x"):
        AnalyzeConfig(output_dir=tmp_path, tokenizer=tmp_path / "tok", corpora=corpora, tasks=[],
                      mixtures={"x": ["general", "missing"]})


def test_perplexity_uses_the_model_folders_own_tokenizer(tmp_path: Path) -> None:
    import torch

    corpora, task = tiny_inputs(tmp_path, notes=12)
    train_wordpiece(GENERAL + CLINICAL, tmp_path / "base", vocab_size=90, whole_word_texts=GENERAL)
    own_dir, plain_dir = tmp_path / "own", tmp_path / "plain"
    own = train_wordpiece(GENERAL + CLINICAL, own_dir, vocab_size=1000)  # saved beside the model: other ids
    base = load_tokenizer(tmp_path / "base")
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=max(len(own), len(base)), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64))
    model.save_pretrained(str(own_dir))
    model.save_pretrained(str(plain_dir))  # no tokenizer in this folder: the shared one is used
    cfg = AnalyzeConfig(output_dir=tmp_path / "out", tokenizer=tmp_path / "base", corpora=corpora, tasks=[task],
                        models={"own": own_dir, "plain": plain_dir}, seq_len=16, perplexity_sequences=4)
    ppl = analyze(cfg)["perplexity"]
    texts = list(task_texts(task, cfg.max_documents))
    with_own = perplexity(own_dir, texts, load_tokenizer(own_dir), cfg)
    assert with_own != perplexity(own_dir, texts, base, cfg)
    assert ppl["own"]["screening/en/test"] == with_own
    assert ppl["plain"]["screening/en/test"] == perplexity(plain_dir, texts, base, cfg)
