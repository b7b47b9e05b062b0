"""Vocabulary extension: choosing the words, the extended tokenizer, and the model's mean-initialised rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

from medtrain.data.tokenizer import load_tokenizer, train_wordpiece
from medtrain.data.vocab_extension import EXTENSION_FILE, VocabularyConfig, extend_tokenizer, select_words
from medtrain.errors import UserError
from medtrain.model import ModelConfig, build_model, export, extend_embeddings

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}
# The tokenizer knows these words whole and every letter and digit alone, so an unseen word is spelt out.
GENERAL = ["the quick brown fox jumps over the lazy dog", "the patient with a fever has a cough and a rash",
           "0123456789 is a number"]
CLINICAL = (["the patient has cardiomyopathy and tachycardia."] * 4
            + ["hepatomegaly with ox 12345 ox"] * 2 + ["nephropathy ox ox 12345 12345 12345"])
SENTENCE = "the patient has cardiomyopathy and tachycardia"


@pytest.fixture()
def base_dir(tmp_path: Path) -> Path:
    train_wordpiece(GENERAL, tmp_path / "base", vocab_size=10_000)
    return tmp_path / "base"


@pytest.fixture()
def extended_dir(base_dir: Path, tmp_path: Path) -> Path:
    words = select_words(CLINICAL, load_tokenizer(base_dir), VocabularyConfig(add=3, min_count=2))
    return extend_tokenizer(base_dir, words, tmp_path / "extended")


def test_the_config_imports_without_torch() -> None:
    """A study config holds a VocabularyConfig and must stay cheap to read."""
    code = ("import sys; from medtrain.data.vocab_extension import VocabularyConfig; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_rejects_nonpositive_values() -> None:
    with pytest.raises(ValueError, match="vocabulary.add"):
        VocabularyConfig(add=0)
    with pytest.raises(ValueError, match="vocabulary.min_count"):
        VocabularyConfig(add=1, min_count=0)


def test_select_words_takes_frequent_words_split_into_three_or_more_pieces(base_dir: Path) -> None:
    tokenizer = load_tokenizer(base_dir)
    assert len(tokenizer.tokenize("ox")) == 2 and len(tokenizer.tokenize("12345")) == 5  # frequent, yet skipped
    # count 4, 4 (tie broken by the word; the full stop is a word of its own), then 2; nephropathy occurs once
    words = select_words(CLINICAL, tokenizer, VocabularyConfig(add=3, min_count=2))
    assert words == ["cardiomyopathy", "tachycardia", "hepatomegaly"]
    assert select_words(CLINICAL, tokenizer, VocabularyConfig(add=1, min_count=1)) == ["cardiomyopathy"]
    assert "nephropathy" in select_words(CLINICAL, tokenizer, VocabularyConfig(add=4, min_count=1))
    with pytest.raises(ValueError, match="vocabulary.add is 4 but the corpora have only 3 words with >= 2 "
                                         "occurrences that split into 3\\+ pieces"):
        select_words(CLINICAL, tokenizer, VocabularyConfig(add=4, min_count=2))


def test_extended_tokenizer_keeps_old_ids_and_gives_new_words_one_token(base_dir: Path, extended_dir: Path) -> None:
    old, new = load_tokenizer(base_dir), load_tokenizer(extended_dir)
    size = len(old)
    new_vocab = new.get_vocab()
    assert all(new_vocab[token] == i for token, i in old.get_vocab().items())
    assert len(new) == size + 3
    assert new.convert_tokens_to_ids(["cardiomyopathy", "tachycardia", "hepatomegaly"]) == [size, size + 1, size + 2]
    old_ids, new_ids = old(SENTENCE)["input_ids"], new(SENTENCE)["input_ids"]
    assert len(new_ids) < len(old_ids) and {size, size + 1} <= set(new_ids)
    assert new.decode(new_ids, skip_special_tokens=True) == SENTENCE
    # a new word inside a longer one is not matched (it is a WordPiece entry, not an added token)
    assert size not in new("xcardiomyopathy")["input_ids"]

    auto = AutoTokenizer.from_pretrained(str(extended_dir), local_files_only=True)
    assert auto(SENTENCE)["input_ids"] == new_ids
    auto.save_pretrained(str(extended_dir.parent / "resaved"))
    assert load_tokenizer(extended_dir.parent / "resaved")(SENTENCE)["input_ids"] == new_ids

    extension = json.loads((extended_dir / EXTENSION_FILE).read_text())
    assert extension["base_vocab_size"] == size
    assert extension["words"] == ["cardiomyopathy", "tachycardia", "hepatomegaly"]
    assert extension["pieces"] == [old(word, add_special_tokens=False)["input_ids"] for word in extension["words"]]
    assert all(len(ids) >= 3 for ids in extension["pieces"])


def test_extend_tokenizer_rejects_words_already_known(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not already in the vocabulary"):
        extend_tokenizer(base_dir, ["patient"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _model(vocab_size: int) -> BertForMaskedLM:
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=vocab_size, **TINY))
    with torch.no_grad():
        mlm.cls.predictions.bias.normal_()  # zero at init: a mean of zeros would prove nothing
    return mlm


def test_extend_embeddings_starts_new_rows_at_the_mean_of_their_pieces() -> None:
    mlm = _model(40)
    old_rows = mlm.get_input_embeddings().weight.detach().clone()
    old_bias = mlm.cls.predictions.bias.detach().clone()
    pieces = [[5, 9, 11], [7, 8, 30, 39]]
    extend_embeddings(mlm, pieces)
    rows, bias = mlm.get_input_embeddings().weight, mlm.cls.predictions.bias
    assert mlm.config.vocab_size == 42 and rows.shape == (42, 32) and bias.shape == (42,)
    assert torch.equal(rows[:40], old_rows) and torch.equal(bias[:40], old_bias)
    for i, ids in enumerate(pieces):
        assert torch.allclose(rows[40 + i], old_rows[ids].mean(0))
        assert torch.allclose(bias[40 + i], old_bias[ids].mean())
    assert mlm.cls.predictions.decoder.weight is rows
    with pytest.raises(ValueError, match="piece ids"):
        extend_embeddings(mlm, [[42]])


def test_export_with_extended_tokenizer_loads_and_runs(extended_dir: Path, tmp_path: Path) -> None:
    extension = json.loads((extended_dir / EXTENSION_FILE).read_text())
    mlm = _model(extension["base_vocab_size"]).eval()
    extend_embeddings(mlm, extension["pieces"])
    export(mlm.state_dict(), mlm.config, extended_dir, tmp_path / "export")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "export"), local_files_only=True)
    loaded = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "export"), local_files_only=True).eval()
    batch = tokenizer(SENTENCE, return_tensors="pt")
    assert int(batch["input_ids"].max()) >= extension["base_vocab_size"]
    with torch.no_grad():
        logits = loaded(**batch).logits
        assert logits.shape[-1] == len(tokenizer)
        assert torch.allclose(logits, mlm(**batch).logits, atol=1e-5)


def test_build_model_grows_a_base_model_leaves_an_extended_one_and_rejects_other_sizes(
        extended_dir: Path, tmp_path: Path) -> None:
    path = extended_dir / EXTENSION_FILE
    extension = json.loads(path.read_text())
    base, grown = extension["base_vocab_size"], extension["base_vocab_size"] + len(extension["words"])
    _model(base).save_pretrained(str(tmp_path / "base_model"))
    model = build_model(ModelConfig(init=tmp_path / "base_model", vocabulary_extension=path), vocab_size=grown)
    rows = model.mlm.get_input_embeddings().weight
    assert model.mlm.config.vocab_size == grown
    assert torch.allclose(rows[base], rows[extension["pieces"][0]].mean(0))
    assert model.mlm.cls.predictions.decoder.weight is rows

    model.mlm.save_pretrained(str(tmp_path / "extended_model"))
    again = build_model(ModelConfig(init=tmp_path / "extended_model", vocabulary_extension=path), vocab_size=grown)
    assert torch.equal(again.mlm.get_input_embeddings().weight, rows)

    fresh = build_model(ModelConfig(config=TINY, vocabulary_extension=path), vocab_size=base)
    assert fresh.mlm.config.vocab_size == grown

    _model(base + 1).save_pretrained(str(tmp_path / "other"))
    with pytest.raises(UserError, match=f"\\({base + 1}\\).*base \\({base}\\).*size \\({grown}\\)"):
        build_model(ModelConfig(init=tmp_path / "other", vocabulary_extension=path), vocab_size=grown)
