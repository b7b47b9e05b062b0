"""benchmarks/finetune_bench.py end to end at a tiny size: a 2-layer BERT built from its config, NER and
screening on a few training documents of the sample data, 1 epoch, 1 repeat; each system in its own process.
Every row has both systems' test F1 and the CPU it ran on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MATRIX = """name: finetune-tiny
repeat: 1
timeout_s: 120
defaults:
  model: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}
  epochs: 1
  batch_size: 16
  lr: 1.0e-3
  max_length: 64
  threads: 1
  bootstrap: 10
  train_docs: 10
runs:
  - {task: ner}
  - {task: screening}
"""


def test_both_systems_train_and_are_scored_on_the_same_sequences(sample_data: Path, tmp_path: Path) -> None:
    matrix = tmp_path / "finetune-tiny.yaml"
    matrix.write_text(MATRIX)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "finetune_bench.py"), str(matrix),
                           "--data", str(sample_data), "--out", str(tmp_path / "results"),
                           "--json", str(tmp_path / "rows.json"), "--markdown", str(tmp_path / "table.md")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    [lines] = (tmp_path / "results").glob("finetune-tiny-*.jsonl")
    assert [json.loads(line)["bench"] for line in lines.read_text().splitlines()] == [r["bench"] for r in rows]
    runs = [r for r in rows if r["bench"] == "finetune"]
    # interleaved: per configuration medtrain, then the Trainer
    assert [(r["config"]["task"], r["system"]) for r in runs] == \
        [("ner", "medtrain"), ("ner", "trainer"), ("screening", "medtrain"), ("screening", "trainer")]
    for run in runs:
        assert run["status"] == "ok", run.get("log_tail")
        assert run["tokens_per_s"] > 0 and run["epoch_s"] > 0 and run["tree_peak_rss_mb"] > 100
        assert run["memory"]["rss_peak_mb"] <= run["tree_peak_rss_mb"] * 1.1  # the tree holds the process
        lang = run["config"]["language"]
        assert set(run["test"]) == {lang} and run["test"][lang]["f1"] is not None
        assert run["cpu"]["model"] and run["cpu"]["threads"] == 1 and isinstance(run["cpu"]["simd"], list)
    trainer_ner = runs[1]
    assert trainer_ner["tokens_counted"] == trainer_ner["tokens"]  # the Trainer saw every training token once
    pairs = {r["config"]["task"]: r for r in rows if r["bench"] == "finetune-pair"}
    assert set(pairs) == {"ner", "screening"}
    for pair in pairs.values():
        assert pair["same_tokens"] and pair["ratio"]["tokens_per_s"] > 0
        assert pair["medtrain"]["test_f1"] is not None and pair["trainer"]["test_f1"] is not None
        assert pair["cpu"]["model"] == runs[0]["cpu"]["model"]
    assert pairs["screening"]["medtrain"]["test_auroc"] is not None
    assert pairs["screening"]["trainer"]["test_auroc"] is not None
    table = (tmp_path / "table.md").read_text()
    assert "| ner es custom/sample len64 bs16 1ep 1t 10docs |" in table and "CPU: " in table
