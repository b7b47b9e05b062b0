"""The masked-only MLM head, loading a local checkpoint, and the Hugging Face export."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM, BertModel

from medtrain.errors import UserError
from medtrain.model import MaskedLM, ModelConfig, build_model, export

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}


def test_masked_only_loss_equals_full_head_loss_at_masked_positions() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(config=TINY), vocab_size=100).eval()
    ids = torch.randint(5, 100, (3, 16))
    positions = torch.tensor([1, 7, 18, 40, 47])
    labels = torch.randint(5, 100, (5,))
    loss = model(ids, positions, labels)
    full = model.mlm(input_ids=ids).logits.reshape(-1, 100)
    reference = torch.nn.functional.cross_entropy(full[positions], labels)
    assert torch.allclose(loss, reference, atol=1e-6)


def test_decoder_stays_tied_to_embeddings() -> None:
    model = build_model(ModelConfig(config=TINY), vocab_size=50)
    assert model.mlm.cls.predictions.decoder.weight is model.mlm.bert.embeddings.word_embeddings.weight


def test_vocabulary_covers_the_tokenizer_and_keeps_a_larger_configured_one() -> None:
    assert build_model(ModelConfig(config={**TINY, "vocab_size": 500}), vocab_size=100).mlm.config.vocab_size == 500
    assert build_model(ModelConfig(config={**TINY, "vocab_size": 50}), vocab_size=100).mlm.config.vocab_size == 100


def test_config_rejects_both_or_neither_and_unknown_fields() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ModelConfig()
    with pytest.raises(ValueError, match="exactly one"):
        ModelConfig(init=Path("x"), config=TINY)
    with pytest.raises(ValueError, match="did you mean hidden_size"):
        ModelConfig(config={"hiden_size": 3})


def test_export_loads_with_transformers_and_gives_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(config=TINY), vocab_size=60).eval()
    state = {k.removeprefix("mlm."): v for k, v in model.state_dict().items()}
    export(state, model.mlm.config, None, tmp_path / "export")
    assert (tmp_path / "export" / "model.safetensors").is_file()
    loaded = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "export"), local_files_only=True).eval()
    ids = torch.randint(5, 60, (2, 10))
    assert torch.allclose(loaded(input_ids=ids).logits, model.mlm(input_ids=ids).logits, atol=1e-6)


def test_continue_from_local_checkpoint_and_warn_without_head(tmp_path: Path, caplog) -> None:
    config = BertConfig(vocab_size=70, **TINY)
    BertForMaskedLM(config).save_pretrained(str(tmp_path / "with_head"))
    BertModel(config).save_pretrained(str(tmp_path / "encoder_only"))
    with caplog.at_level(logging.WARNING, logger="medtrain.model"):
        model = build_model(ModelConfig(init=tmp_path / "with_head"), vocab_size=70)
    assert isinstance(model, MaskedLM) and "no masked-LM head" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="medtrain.model"):
        model = build_model(ModelConfig(init=tmp_path / "encoder_only"), vocab_size=70)
    assert "no masked-LM head" in caplog.text
    assert model.mlm.cls.predictions.decoder.weight is model.mlm.bert.embeddings.word_embeddings.weight
    with pytest.raises(UserError, match="smaller than"):
        build_model(ModelConfig(init=tmp_path / "with_head"), vocab_size=500)
    with pytest.raises(UserError, match="config.json"):
        build_model(ModelConfig(init=tmp_path), vocab_size=70)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_reaches_a_new_and_a_loaded_model(attention: str, tmp_path: Path) -> None:
    BertForMaskedLM(BertConfig(vocab_size=70, **TINY)).save_pretrained(str(tmp_path / "saved"))
    for cfg in (ModelConfig(config=TINY, attention=attention), ModelConfig(init=tmp_path / "saved", attention=attention)):
        assert build_model(cfg, vocab_size=70).mlm.config._attn_implementation == attention
