"""Fixtures for integration tests: the bundled sample data and packed shards, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtrain.config import load_config
from medtrain.data.pack import PrepareConfig, prepare
from medtrain.data.sample import write_sample_data


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`medtrain sample-data` output at the default (test) scale."""
    out = tmp_path_factory.mktemp("sample") / "data"
    write_sample_data(out, seed=0, scale=1.0)
    return out


@pytest.fixture(scope="session")
def sample_shards(sample_data: Path) -> Path:
    """The sample corpora prepared into 64-token shards, through the same config `make demo` uses."""
    out = sample_data.parent / "shards"
    prepare(load_config(PrepareConfig, sample_data / "prepare.yaml", [f"output_dir={out}", "seq_len=64",
                                                                      "num_workers=0"]))
    return out
