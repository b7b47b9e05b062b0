"""The benchmark suite's FLOP formula (by hand and against torch's FLOP counter), matrix expansion and the
largest-micro-batch search."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from medtrain.config import build_config
from medtrain.errors import UserError
from medtrain.pretrain import PretrainConfig

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    """benchmarks/<name>.py under a private module name (benchmarks/ is scripts, not a package on the path)."""
    spec = importlib.util.spec_from_file_location(f"medtrain_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


flops = _load("flops")
run = _load("run")

TINY = flops.BertShape(layers=2, hidden=4, intermediate=8, vocab=10)


def test_train_step_flops_match_a_hand_count() -> None:
    # per token and layer, forward: Q,K,V 3 x 2*4*4 = 96; output 2*4*4 = 32; FFN 2*4*8 + 2*8*4 = 128;
    # scores 2*3*4 = 24; weighted values 2*3*4 = 24 -> 304; 2 layers -> 608; 2 sequences x 3 tokens -> 3648
    encoder = 3648
    head = 2 * 4 * 4 + 2 * 4 * 10  # one masked row: transform 32 + decoder 80
    got = flops.train_step_flops(TINY, sequences=2, seq_len=3, head_rows=1)
    assert got == {"model_flops": 3 * (encoder + head), "hardware_flops": 3 * (encoder + head)}
    ckpt = flops.train_step_flops(TINY, sequences=2, seq_len=3, head_rows=1, activation_checkpointing=True)
    assert ckpt["model_flops"] == 3 * (encoder + head)
    assert ckpt["hardware_flops"] == 3 * (encoder + head) + encoder  # the recomputed encoder forward


def test_formula_matches_torch_flop_counter_on_the_masked_only_model() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from medtrain.model import ModelConfig, build_model

    config = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64}
    torch.manual_seed(0)
    model = build_model(ModelConfig(config=config), vocab_size=50)
    ids = torch.randint(5, 50, (3, 16))
    positions = torch.tensor([1, 7, 18, 40, 47])
    labels = torch.randint(5, 50, (5,))
    with FlopCounterMode(display=False) as counter:
        model(ids, positions, labels).backward()
    shape = flops.BertShape.from_config(config, vocab=50)
    expected = flops.train_step_flops(shape, sequences=3, seq_len=16, head_rows=5)["model_flops"]
    assert counter.get_total_flops() == expected


def test_peak_table_lookup() -> None:
    assert flops.peak_for("NVIDIA H100 80GB HBM3") == ("H100 SXM", 989.4e12)
    assert flops.peak_for("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert flops.peak_for("NVIDIA H200")[0] == "H200"
    assert flops.peak_for("NVIDIA A100-SXM4-80GB") == ("A100", 312.0e12)
    assert flops.peak_for("Some CPU") is None


def zero(n: int) -> str:
    return f"ds_configs/zero{n}.json"


def test_matrix_expansion_products_defaults_and_duplicates() -> None:
    matrix = run.Matrix(defaults={"model": "mini", "micro_batch": 4},
                        runs=[{"deepspeed": [zero(n) for n in range(4)], "micro_batch": [4, 16]},
                              {"deepspeed": zero(2), "micro_batch": 4},  # already in the first block: collapses
                              {"system": ["hf-padded", "hf-grouped"], "deepspeed": [zero(0), zero(3)]}])  # not HF's
    configs = run.expand(matrix)
    assert len(configs) == 8 + 2
    assert all(c["model"] == "mini" for c in configs)
    assert sorted((run.layout(c)["zero"], c["micro_batch"]) for c in configs if c["system"] == "medtrain") == \
        [(z, mb) for z in range(4) for mb in (4, 16)]
    hf = [c for c in configs if c["system"] != "medtrain"]
    assert [c["deepspeed"] for c in hf] == [None, None] and hf[0]["micro_batch"] == 4
    assert len({run.signature(c) for c in configs}) == len(configs)
    assert [run.normalize(c) for c in configs] == configs  # normalising twice changes nothing


def test_the_deepspeed_json_sets_stage_and_offload_as_in_pretraining() -> None:
    layouts = [run.layout(run.normalize({"deepspeed": f"ds_configs/{name}.json"}))
               for name in ("zero0", "zero2-offload", "zero3-offload-optimizer", "zero3-offload")]
    assert layouts == [{"zero": 0, "offload": "none"}, {"zero": 2, "offload": "optimizer"},
                       {"zero": 3, "offload": "optimizer"}, {"zero": 3, "offload": "all"}]
    resolved = run.pretrain_config(run.normalize({"precision": "bf16", "grad_accum": 2}), Path("shards"), 0,
                                   Path("out"))
    cfg = build_config(PretrainConfig, resolved)  # what the worker hands to pretrain.build()
    assert cfg.deepspeed == run.REPO / "ds_configs" / "zero2.json" and cfg.train.precision == "bf16"
    assert cfg.train.grad_accum == 2 and cfg.train.max_steps == 3 + 10 and cfg.train.eval_every == 0


def test_matrix_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="did you mean micro_batch"):
        run.expand(run.Matrix(runs=[{"micro_bach": 4}]))
    with pytest.raises(UserError, match="DeepSpeed config not found"):
        run.expand(run.Matrix(runs=[{"deepspeed": "ds_configs/zero9.json"}]))
    with pytest.raises(UserError, match="one process"):
        run.expand(run.Matrix(runs=[{"system": "hf-grouped", "procs": 2}]))
    with pytest.raises(UserError, match="model must be one of"):
        run.expand(run.Matrix(runs=[{"model": "huge"}]))
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nruns:\n  - {micro_batch: 4}\ntimeout: 5\n")
    with pytest.raises(UserError, match=r"m.yaml:4: timeout: unknown key; did you mean timeout_s"):
        run.load_matrix(path)
    path.write_text("name: m\nruns:\n  - {zero: 2}\n")
    matrix, lines = run.load_matrix(path)
    with pytest.raises(UserError, match=r"m.yaml:3: zero: unknown key"):
        run.expand(matrix, path, lines)


@pytest.mark.parametrize("largest, start, step", [(37, 8, 1), (37, 64, 1), (5, 8, 1), (1000, 8, 1), (37, 8, 8)])
def test_max_batch_search_doubles_then_bisects(largest: int, start: int, step: int) -> None:
    found, probed = run.search_max_batch(lambda mb: mb <= largest, start=start, limit=512, step=step)
    if largest >= 512:
        assert found == 512
    else:
        assert found <= largest < found + step
    assert len(probed) == len(set(probed)) and len(probed) <= 2 * 10


def test_max_batch_search_when_nothing_fits() -> None:
    assert run.search_max_batch(lambda mb: False, start=8, limit=64)[0] == 0


def test_the_runner_names_what_the_baselines_and_the_report_need_before_the_first_row() -> None:
    medtrain_row, hf_row = {"system": "medtrain"}, {"system": "hf-grouped"}
    old_accelerate = {"accelerate": "1.0.1", "matplotlib": "3.9.0"}.get
    assert run.missing_requirements([medtrain_row, hf_row], False, old_accelerate) == ["accelerate>=1.1.0"]
    assert run.missing_requirements([medtrain_row], False, old_accelerate) == []
    assert run.missing_requirements([medtrain_row], True, lambda name: None) == ["matplotlib>=3.7"]
    assert run.missing_requirements([hf_row], True, {"accelerate": "1.10.0", "matplotlib": "3.7"}.get) == []
    # In this venv (no bench extra unless installed), the real lookup: a package that is not there reads None.
    assert run.installed_version("no-such-package-medtrain") is None
    assert run.installed_version("torch") == torch.__version__
