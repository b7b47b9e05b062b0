"""Elastic resume for real: a run checkpointed on N CPU ranks (gloo) resumes on M ranks with ZeRO 0-3, through
DeepSpeed's universal checkpoint where the optimizer state is cut per rank. Against one uninterrupted run of the
same global batch: the audit's multiset of sequence ids is equal (none lost, none repeated), the step count and
learning rate continue, and the final loss is within 2%."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from _launch import REPO, deepspeed_command, run

pytestmark = pytest.mark.integration

SCRIPT = str(REPO / "medtrain" / "pretrain.py")
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 128}
SEQ_LEN = 64  # the sample_shards fixture's
GLOBAL_BATCH = 8
STEPS, KILLED_AT, SAVED_AT = 8, 6, 4


def write_config(tmp_path: Path, shards: Path, stage: str) -> Path:
    config = {
        "output_dir": str(tmp_path / "unused"),
        "data": {"shards": str(shards), "micro_batch_size": GLOBAL_BATCH, "num_workers": 0, "audit": True},
        "model": {"config": TINY},
        "deepspeed": str(REPO / "ds_configs" / f"{stage}.json"),
        "train": {"max_steps": STEPS, "lr": 1e-3, "warmup_steps": 2, "seed": 3, "save_every": SAVED_AT,
                  "keep_last": 2, "eval_every": 0},
        "progress": False,
    }
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: Path, out: Path, world: int, overrides: list[str]) -> str:
    """One rank as `python medtrain/pretrain.py`, more under the deepspeed launcher."""
    args = [str(config), f"output_dir={out}", *overrides]
    return run([sys.executable, SCRIPT, *args] if world == 1 else deepspeed_command(SCRIPT, args, world))


def train_records(out: Path) -> list[dict[str, float]]:
    return [r for r in map(json.loads, (out / "history.jsonl").read_text().splitlines()) if "train/loss" in r]


def audit(out: Path) -> dict[int, list[int]]:
    """Every audit line of every rank file: step -> the ids all ranks trained on in it."""
    steps: dict[int, list[int]] = {}
    for path in sorted((out / "audit").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps.setdefault(record["step"], []).extend(record["ids"])
    return steps


@pytest.fixture(scope="module")
def uninterrupted(sample_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One rank, micro-batch 8: the reference every resized run keeps the global batch of."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    out = tmp_path / "run"
    launch(write_config(tmp_path, sample_shards, "zero0"), out, 1, [])
    return out


# (stage, ranks before, their overrides, ranks after, theirs): each keeps micro-batch x accumulation x ranks = 8
CASES = [
    ("zero0", 2, ["data.micro_batch_size=4"], 1, ["data.micro_batch_size=8"]),
    ("zero1", 1, [], 2, ["data.micro_batch_size=4"]),
    ("zero2", 2, ["data.micro_batch_size=4"], 4, ["data.micro_batch_size=2"]),
    ("zero3", 2, ["data.micro_batch_size=4"], 1, ["data.micro_batch_size=4", "train.grad_accum=2"]),
]


@pytest.mark.parametrize("stage, before, before_overrides, after, after_overrides", CASES,
                         ids=[f"{c[0]}-{c[1]}to{c[3]}" for c in CASES])
def test_resume_on_another_number_of_ranks(stage: str, before: int, before_overrides: list[str], after: int,
                                           after_overrides: list[str], uninterrupted: Path, sample_shards: Path,
                                           tmp_path: Path) -> None:
    config = write_config(tmp_path, sample_shards, stage)
    out = tmp_path / "run"
    # Trained to step 6, saved at 4 and 6; then `latest` set back to 4, as a kill during the save of step 6
    # leaves it: the resumed run redoes steps 5 and 6, and their audit lines must be replaced, not added to.
    launch(config, out, before, [*before_overrides, f"train.max_tokens={KILLED_AT * GLOBAL_BATCH * SEQ_LEN}"])
    assert max(audit(out)) == KILLED_AT
    (out / "checkpoints" / "latest").write_text(f"step-{SAVED_AT:08d}\n")

    output = launch(config, out, after, after_overrides)
    if stage != "zero0":  # ZeRO-0 in fp32 keeps one whole optimizer state: nothing to convert
        assert f"written by {before} ranks, resuming on {after}" in output
    assert not (out / "checkpoints" / "universal").exists()  # dropped once the resized run saved its own

    ids, reference_ids = audit(out), audit(uninterrupted)
    assert sorted(ids) == list(range(1, STEPS + 1))
    assert all(len(step_ids) == GLOBAL_BATCH for step_ids in ids.values())
    assert Counter(i for step_ids in ids.values() for i in step_ids) == Counter(
        i for step_ids in reference_ids.values() for i in step_ids)
    # step s reads global positions (s-1) x 8 ... s x 8 - 1 whatever the partition: equal step by step too
    assert all(sorted(ids[s]) == sorted(reference_ids[s]) for s in ids)

    records, reference = train_records(out), train_records(uninterrupted)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # steps 5, 6 once each: history was trimmed
    assert [r["train/learning_rate"] for r in records] == pytest.approx(
        [r["train/learning_rate"] for r in reference], rel=1e-9)
    assert records[-1]["train/loss"] == pytest.approx(reference[-1]["train/loss"], rel=0.02)
    assert (out / "export" / "model.safetensors").is_file()
