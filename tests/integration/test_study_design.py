"""The paper's study designs through `medtrain study`, for real and small: variant A continues from the baseline
with an extended vocabulary, B continues from A (staged), C mixes three corpora by language temperature 0.7;
every variant is pretrained twice (pretraining seeds 0 and 1) and each replicate fine-tuned with two seeds. The
study runs locally to its report; the checks read what it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from medtrain.data.mixing import mixture_probabilities
from medtrain.data.shards import read_manifest

pytestmark = pytest.mark.integration

NER_RO = {"path": "ner/ro/split/{split}.conllu", "format": "conllu", "columns": {"tag": "misc:BioNERLabel"},
          "discontinuous": "join"}
STUDY = {
    "prepare": {"tokenizer": "tokenizer", "seq_len": 64, "validation_fraction": 0.05, "num_workers": 0, "corpora": [
        {"name": f"{domain}_{lang}", "path": f"corpora/{domain}_{lang}.jsonl", "language": lang, "domain": domain}
        for domain, lang in [("general", "ro"), ("general", "es"), ("clinical", "ro"), ("clinical", "es"),
                             ("biomedical", "ro")]]},
    "pretrain": {"recipe": "demo-pretrain", "overrides": {
        "model.config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64},
        "deepspeed": "ds_configs/zero0.json", "data": {"micro_batch_size": 8, "num_workers": 0},
        "train": {"lr": 1.0e-3, "warmup_steps": 2, "save_every": 100, "eval_every": 0, "log_every": 5}}},
    "baseline": {"pretrain": {"corpora": {"general_ro": 1.0, "general_es": 1.0},
                              "overrides": {"train.max_steps": 10}}},
    "variants": {
        "A": {"corpora": {"clinical_ro": 1.0, "clinical_es": 1.0}, "vocabulary": {"add": 40, "min_count": 3},
              "overrides": {"train.max_steps": 6}},
        "B": {"from": "A", "corpora": {"biomedical_ro": 1.0}, "overrides": {"train.max_steps": 6}},
        "C": {"corpora": {"clinical_ro": 1.0, "clinical_es": 1.0, "biomedical_ro": 1.0}, "sampling": "temperature",
              "temperature": 0.7, "overrides": {"train.max_steps": 6}}},
    "pretrain_seeds": [0, 1],
    "tasks": [{"name": "ner-ro", "recipe": "finetune-ner", "path": {"ro": NER_RO, "es": "ner/es/{split}"},
               "labels": {"map": {"es": {"NORMALIZABLES": "CHEM", "NO_NORMALIZABLES": "CHEM", "ENFERMEDAD": "DISO",
                                         "SINTOMA": "DISO", "PROCEDIMIENTO": "PROC", "ANATOMIA": "ANAT"}},
                          "keep": ["ANAT", "CHEM", "DISO", "PROC"]},
               "train_languages": ["ro"], "test_languages": ["ro", "es"],
               "overrides": {"train": {"epochs": 1, "lr": 1.0e-3, "batch_size": 16, "max_length": 32},
                             "eval.bootstrap": 20}}],
    "seeds": [0, 1],
    "local": {"ranks": 1, "finetune_parallelism": 2},
    "analysis": {"max_documents": 20, "perplexity_sequences": 4},
    "compare": {"bootstrap": 200},
}
VARIANTS = ("A", "B", "C")


def write_study(path: Path, data: Path, out: Path, **changes: object) -> Path:
    path.write_text(yaml.safe_dump({**STUDY, "data_dir": str(data), "output_dir": str(out), **changes},
                                   sort_keys=False), encoding="utf-8")
    return path


def medtrain_study(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medtrain.cli", "study", str(config)], capture_output=True,
                          text=True, timeout=1800)


@pytest.fixture(scope="module")
def design(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("design")
    result = medtrain_study(write_study(root / "study.yaml", sample_data, root / "out"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "out"


def run_config(out: Path, replicate: str) -> dict:
    return yaml.safe_load((out / "pretrain" / replicate / "config.yaml").read_text(encoding="utf-8"))


def test_staged_variant_continues_from_its_parent_replicate_with_its_seed(design: Path) -> None:
    for seed in (0, 1):
        a, b = run_config(design, f"A-seed{seed}"), run_config(design, f"B-seed{seed}")
        assert b["model"]["init"] == str(design / "pretrain" / f"A-seed{seed}" / "export")
        assert a["model"]["init"] == str(design / "pretrain" / "baseline" / "export")
        assert a["train"]["seed"] == b["train"]["seed"] == seed
        assert a["data"]["shards"] == b["data"]["shards"] == str(design / "shards-A")  # A's tokenizer's shards
    weights = [(design / "pretrain" / f"A-seed{s}" / "export" / "model.safetensors").read_bytes() for s in (0, 1)]
    assert weights[0] != weights[1]  # two replicates, not one run twice


def test_temperature_mix_targets_and_realised_token_shares(design: Path) -> None:
    manifest = read_manifest(design / "shards")
    config = run_config(design, "C-seed0")["data"]
    target = mixture_probabilities([c.sequences for c in manifest.corpora], [c.language for c in manifest.corpora],
                                   [config["weights"][c.name] for c in manifest.corpora], "temperature", 0.7)
    for seed in (0, 1):
        mixture = json.loads((design / "pretrain" / f"C-seed{seed}" / "mixture.json").read_text(encoding="utf-8"))
        assert (mixture["sampling"], mixture["temperature"]) == ("temperature", 0.7)
        corpora = mixture["corpora"]
        assert sum(c["sequences"] for c in corpora.values()) == mixture["sequences"] == 6 * 8
        assert np.allclose([corpora[c.name]["target"] for c in manifest.corpora], target)
        assert corpora["general_ro"]["sequences"] == 0 and corpora["biomedical_ro"]["sequences"] > 0
    report = (design / "report.md").read_text(encoding="utf-8")
    assert "Realised share of each pretraining run's training tokens" in report
    assert next(line for line in report.splitlines() if line.startswith("| C |")).count("(") == 3


def test_report_compares_every_pair_with_raw_and_holm_adjusted_decisions(design: Path) -> None:
    report = json.loads((design / "report.json").read_text(encoding="utf-8"))["tasks"]["ner-ro"]
    pairs = {(d["against"], d["variant"]) for d in report["differences"]}
    assert pairs == {("baseline", "A"), ("baseline", "B"), ("baseline", "C"), ("A", "B"), ("A", "C"), ("B", "C")}
    assert len(report["differences"]) == 6 * 2  # x two test languages
    for d in report["differences"]:
        assert d["p"] is not None and d["p"] <= d["p_adjusted"] <= 1
        assert d["significant_adjusted"] <= d["significant"]
        expected_b = 1 if d["variant"] == "baseline" else 2
        assert d["counts"]["b"]["replicates"] == expected_b and d["counts"]["b"]["seeds"] == [2] * expected_b
        assert d["counts"]["a"]["replicates"] == (1 if d["against"] == "baseline" else 2)
    markdown = (design / "report.md").read_text(encoding="utf-8")
    assert "| ner-ro | exact-offset entity F1 | B − A | ro → ro |" in markdown
    assert "adjusted p" in markdown and "Holm's step-down" in markdown
    assert "baseline 1 × 2, A 2 × 2" in markdown  # what the hierarchical bootstrap resampled
    assert "## Why: the gains beside the data behind them" in markdown and "Spearman correlation" in markdown


def test_extended_vocabulary_export_loads_and_splits_less(design: Path) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    extension = json.loads((design / "vocabulary" / "A" / "vocabulary_extension.json").read_text(encoding="utf-8"))
    baseline = AutoTokenizer.from_pretrained(str(design / "pretrain" / "baseline" / "export"))
    for replicate in ("A-seed0", "B-seed1"):  # A's own export and its staged child's carry the new words
        export = design / "pretrain" / replicate / "export"
        tokenizer = AutoTokenizer.from_pretrained(str(export))
        model = AutoModelForMaskedLM.from_pretrained(str(export))
        assert tokenizer.is_fast and len(tokenizer) == len(baseline) + 40 == model.config.vocab_size
        sentence = " ".join(extension["words"][:5])
        assert len(tokenizer.tokenize(sentence)) < len(baseline.tokenize(sentence))
        ids = tokenizer(sentence, return_tensors="pt")
        assert model(**ids).logits.shape[-1] == len(tokenizer)
    analysis = json.loads((design / "analysis" / "analysis.json").read_text(encoding="utf-8"))
    assert analysis["fertility"]["A"]["clinical_ro"] < analysis["fertility"]["base"]["clinical_ro"]
    assert "Fertility before and after vocabulary extension" in (design / "report.md").read_text(encoding="utf-8")


def test_vocabulary_larger_than_the_corpora_can_fill_stops_before_anything_runs(
        sample_data: Path, tmp_path: Path) -> None:
    variants = {**STUDY["variants"], "A": {**STUDY["variants"]["A"], "vocabulary": {"add": 10 ** 6}}}
    config = write_study(tmp_path / "study.yaml", sample_data, tmp_path / "out", variants=variants)
    result = medtrain_study(config)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {config}: variants.A.vocabulary.add: vocabulary.add is 1000000"), line
    assert not (tmp_path / "out" / "pretrain").exists() and not (tmp_path / "out" / "shards").exists()
