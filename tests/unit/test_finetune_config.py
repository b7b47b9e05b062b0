"""Fine-tuning configs: every task's defaults form a valid config, and the config imports without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medtrain.config import build_config, config_to_dict
from medtrain.data.documents import window_spans
from medtrain.errors import UserError
from medtrain.finetune import FinetuneConfig

REQUIRED = {  # per task: only what has no default
    "ner": {"format": "brat", "train": "data/ner/es/train", "dev": "data/ner/es/dev", "test": "data/ner/es/test"},
    "screening": {"format": "jsonl", "train": "data/screening/nl/train.jsonl",
                  "dev": "data/screening/nl/dev.jsonl", "test": "data/screening/nl/test.jsonl"},
}


def build(task: str, **extra: Any) -> FinetuneConfig:
    return build_config(FinetuneConfig, {"output_dir": "runs/x", "task": task, "model": "models/mbert",
                                         "data": REQUIRED[task], **extra})


@pytest.mark.parametrize("task", sorted(REQUIRED))
def test_defaults_alone_form_a_valid_config(task: str) -> None:
    cfg = build(task)
    assert cfg.task == task and cfg.train.max_length == 128 and cfg.data.test == {"es" if task == "ner" else "nl":
                                                                                  Path(REQUIRED[task]["test"])}
    stride = cfg.screening.stride
    assert isinstance(stride, int) and config_to_dict(cfg)["screening"]["stride"] == stride  # config.yaml: a number
    if task == "screening":
        assert window_spans(1000, cfg.train.max_length, stride)  # the windows these defaults ask for exist


@pytest.mark.parametrize("max_length, stride", [(128, 63), (64, 31), (8, 3), (131, 128), (256, 128), (512, 128)])
def test_unset_stride_is_128_where_it_fits_else_half_the_window(max_length: int, stride: int) -> None:
    """Where 128 was valid it stays (same windows, same grid signatures); a shorter window gets half itself."""
    assert build("screening", train={"max_length": max_length}).screening.stride == stride


def test_ner_keeps_stride_128_so_its_grid_signatures_do_not_change() -> None:
    assert build("ner", train={"max_length": 64}).screening.stride == 128


def test_a_given_stride_is_kept_and_checked() -> None:
    assert build("screening", screening={"stride": 0}).screening.stride == 0
    with pytest.raises(UserError, match=r"screening.stride must be smaller than train.max_length - 2"):
        build("screening", screening={"stride": 126})


def test_format_must_fit_the_task() -> None:
    with pytest.raises(UserError, match="data.format jsonl does not fit task ner"):
        build("ner", data={**REQUIRED["ner"], "format": "jsonl"})


def test_the_config_imports_without_torch() -> None:
    """`medtrain grid status` and the results tables read FinetuneConfig and RESULTS: no model library."""
    code = ("import sys; from medtrain.finetune import FinetuneConfig, RESULTS; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
