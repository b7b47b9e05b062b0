"""engine.py's DeepSpeed config assembly and learning-rate schedule (no engine is started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtrain.engine import EngineSpec, build_ds_config, default_precision, lr_factor, model_states_estimate
from medtrain.errors import UserError

DS_CONFIGS = Path(__file__).resolve().parents[2] / "ds_configs"


def spec(ds: Path, **kw) -> EngineSpec:
    values = dict(ds_config=ds, micro_batch_size=4, grad_accum=2, lr=1e-4, warmup_steps=10, max_steps=100)
    return EngineSpec(**{**values, **kw})


@pytest.mark.parametrize("name", sorted(p.name for p in DS_CONFIGS.glob("*.json")))
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_shipped_config_fills_in_for_every_precision(name: str, precision: str) -> None:
    ds = build_ds_config(spec(DS_CONFIGS / name, precision=precision), world_size=3)
    assert ds["train_batch_size"] == 4 * 2 * 3
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert ds["bf16"]["enabled"] == (precision == "bf16") and ds["fp16"]["enabled"] == (precision == "fp16")
    offload = "offload" in name
    assert ("optimizer" in ds) == offload
    assert ds["zero_optimization"]["stage"] == int(name[4])


def test_contradicting_batch_size_names_both_values(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 64, "zero_optimization": {"stage": 2}}))
    with pytest.raises(UserError) as info:
        build_ds_config(spec(path), world_size=2)
    message = info.value.format()
    assert "64" in message and "16" in message and "train.grad_accum" in message and str(path) in message


def test_auto_values_are_filled(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": "auto", "gradient_accumulation_steps": "auto"}))
    assert build_ds_config(spec(path), world_size=1)["train_batch_size"] == 8


def test_precision_contradiction(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"bf16": {"enabled": True}}))
    with pytest.raises(UserError, match="train.precision=bf16"):
        build_ds_config(spec(path, precision="fp32"), world_size=1)
    assert build_ds_config(spec(path, precision="bf16"), world_size=1)["bf16"]["enabled"]


def test_optimizer_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"optimizer": {"type": "Adam"}}))
    with pytest.raises(UserError, match="optimizer"):
        build_ds_config(spec(path), world_size=1)


def test_bad_json_points_at_line(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text('{\n  "zero_optimization": {"stage": 2},\n}\n')
    with pytest.raises(UserError) as info:
        build_ds_config(spec(path), world_size=1)
    assert info.value.line == 3


def test_lr_schedule_shapes() -> None:
    warm, total = 10, 110
    assert lr_factor(0, warm, total, "linear", 0.0) == pytest.approx(0.1)
    assert lr_factor(9, warm, total, "linear", 0.0) == pytest.approx(1.0)
    assert lr_factor(60, warm, total, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(60, warm, total, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(35, warm, total, "cosine", 0.0) > lr_factor(35, warm, total, "linear", 0.0)
    assert lr_factor(total, warm, total, "linear", 0.1) == pytest.approx(0.1)
    assert lr_factor(total, warm, total, "constant", 0.0) == 1.0


def test_memory_estimate_counts_every_parameter_once() -> None:
    from medtrain.model import ModelConfig, build_model

    model = build_model(ModelConfig(config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                            "intermediate_size": 64}), vocab_size=100)
    stage3 = model_states_estimate(model, stage=3, offload="all", procs=2, nodes=1)
    assert stage3["total_params"] == sum(p.numel() for p in model.parameters())  # the tied decoder once
    assert stage3["largest_layer_params"] == 512 * 32  # position embeddings (BERT default 512) > words (100)
    assert stage3["function"] == "estimate_zero3_model_states_mem_needs" and stage3["host"] > 0
    assert model_states_estimate(model, stage=0, offload="none", procs=1, nodes=1)["function"] is None


@pytest.mark.parametrize("section, cuda, bf16_capable, expected", [
    ("bf16", False, False, "bf16"), ("fp16", True, True, "fp16"),
    (None, True, True, "bf16"), (None, True, False, "fp32"), (None, False, False, "fp32"),
])
def test_unset_precision_follows_the_json_then_the_device(section: str | None, cuda: bool, bf16_capable: bool,
                                                          expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 16-bit mode a JSON enables wins (so an fp16 JSON needs no train.precision); otherwise bf16 where the GPU
    has it, fp32 on older GPUs and on CPU. The device is faked: this is medtrain's choice, not torch's query."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_capable)
    ds_json = {"zero_optimization": {"stage": 2}, **({section: {"enabled": True}} if section else {})}
    assert default_precision(ds_json) == expected
