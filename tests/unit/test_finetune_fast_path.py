"""The fine-tuning fast path: length-grouped batches as a pure function of (seed, epoch), prediction in input
order whatever the batching, the switches resolved for the machine and recorded in config.yaml, fused AdamW
agreeing with the loop, and a train loss read back on log steps only but meaning what it meant."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification, \
    BertForTokenClassification

from medtrain.config import build_config
from medtrain.data.sample import write_sample_data
from medtrain.errors import UserError
from medtrain.finetune import FinetuneConfig, TrainConfig
from medtrain.finetune.model import autocast, build_optimizer, collate, make_predict, \
    resolve_device_defaults
from medtrain.finetune.run import GROUP_BATCHES, Loop, _train_epoch, epoch_batches, epoch_order, finetune

CPU = torch.device("cpu")
TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64)


def skewed_lengths(n: int, seed: int = 0) -> list[int]:
    """Mostly short sentences and a tail of long ones, as clinical NER corpora have them."""
    rng = random.Random(seed)
    return [rng.randint(4, 20) if rng.random() < 0.85 else rng.randint(60, 128) for _ in range(n)]


def padded_share(batches: list[list[int]], lengths: list[int]) -> float:
    """Padding tokens over all tokens, each batch padded to its longest sequence."""
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / total


# ----------------------------------------------------------------------------- length-grouped batches


@pytest.mark.parametrize("n, batch_size", [(1000, 16), (37, 8), (5, 16), (16 * GROUP_BATCHES * 2 + 3, 16)])
def test_grouped_batches_hold_every_index_once(n: int, batch_size: int) -> None:
    batches = epoch_batches(skewed_lengths(n), batch_size, seed=3, epoch=1, group_by_length=True)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert len(batches) == -(-n // batch_size)  # the steps per epoch the schedule was built for
    assert sum(len(b) != batch_size for b in batches) <= 1  # only the last chunk's last batch may be short


def test_grouped_batches_are_a_function_of_seed_and_epoch_only() -> None:
    lengths = skewed_lengths(1000)
    batches = epoch_batches(lengths, 16, seed=0, epoch=2, group_by_length=True)
    assert batches == epoch_batches(list(lengths), 16, seed=0, epoch=2, group_by_length=True)
    assert batches != epoch_batches(lengths, 16, seed=0, epoch=3, group_by_length=True)
    assert batches != epoch_batches(lengths, 16, seed=1, epoch=2, group_by_length=True)


def test_grouped_batches_pad_much_less_than_random_ones() -> None:
    lengths = skewed_lengths(2000)
    grouped = padded_share(epoch_batches(lengths, 16, 0, 0, group_by_length=True), lengths)
    random_batches = padded_share(epoch_batches(lengths, 16, 0, 0, group_by_length=False), lengths)
    assert grouped < random_batches / 3, (grouped, random_batches)


def test_grouped_batch_order_is_shuffled_not_sorted() -> None:
    lengths = skewed_lengths(2000)
    longest = [max(lengths[i] for i in b) for b in epoch_batches(lengths, 16, 0, 0, group_by_length=True)]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)
    first_long = next(k for k, m in enumerate(longest) if m >= 60)
    assert first_long < len(longest) // 2  # long batches come throughout the epoch, not all at one end


def test_ungrouped_batches_are_the_epoch_order_cut_in_turn() -> None:
    order = epoch_order(50, seed=4, epoch=0)
    assert epoch_batches([1] * 50, 16, 4, 0, group_by_length=False) == [order[:16], order[16:32], order[32:48],
                                                                         order[48:]]


# ----------------------------------------------------------------------------- prediction order


@pytest.mark.parametrize("model_class", [BertForTokenClassification, BertForSequenceClassification])
def test_prediction_sorted_by_length_returns_input_order(model_class: Any) -> None:
    torch.manual_seed(0)
    model = model_class(BertConfig(**TINY, num_labels=3)).eval()
    rng = random.Random(0)
    sequences = [[rng.randint(1, 49) for _ in range(length)] for length in (5, 30, 2, 17, 30, 9, 1, 24)]
    predict = make_predict(model, batch_size=3, pad_id=0, device=CPU, precision="fp32")
    batched = predict(sequences)
    one_by_one = [predict([s])[0] for s in sequences]
    assert len(batched) == len(sequences) and model.training  # the loop's train mode is given back
    for got, want, seq in zip(batched, one_by_one, sequences):
        assert got.shape == want.shape and (got.shape[0] == len(seq) if model_class is BertForTokenClassification
                                            else got.shape == (3,))
        assert torch.allclose(torch.from_numpy(got), torch.from_numpy(want), atol=1e-5)
    assert predict([]) == []


def test_bf16_autocast_runs_the_forward_in_bf16_and_fp32_leaves_it() -> None:
    layer = torch.nn.Linear(4, 2)
    with autocast("bf16", CPU):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast("fp32", CPU):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    assert layer.weight.dtype == torch.float32


# ----------------------------------------------------------------------------- resolved switches


def test_unset_switches_resolve_to_fp32_and_fused_adamw_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    t = TrainConfig()
    assert (t.precision, t.attention, t.fused_optimizer, t.group_by_length) == (None, None, None, False)
    assert resolve_device_defaults(t) == CPU
    assert (t.precision, t.fused_optimizer) == ("fp32", True)
    given = TrainConfig(precision="bf16", fused_optimizer=False)
    resolve_device_defaults(given)
    assert (given.precision, given.fused_optimizer) == ("bf16", False)  # what is given is kept


def test_unset_switches_resolve_to_bf16_on_a_gpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    t = TrainConfig()
    assert resolve_device_defaults(t).type == "cuda" and (t.precision, t.fused_optimizer) == ("bf16", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    t = TrainConfig()
    resolve_device_defaults(t)
    assert t.precision == "fp32"
    with pytest.raises(UserError, match=r"train\.precision: .*set train\.precision=fp32 or leave it unset"):
        resolve_device_defaults(TrainConfig(precision="bf16"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A little of the sample data and a tiny BERT folder with the sample tokenizer, as a pretraining export."""
    out = tmp_path_factory.mktemp("fast-path")
    write_sample_data(out / "data", seed=0, scale=0.1)
    tokenizer = AutoTokenizer.from_pretrained(str(out / "data" / "tokenizer"))
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(**{**TINY, "vocab_size": len(tokenizer)})).save_pretrained(str(out / "model"))
    for file in (out / "data" / "tokenizer").iterdir():
        shutil.copy2(file, out / "model" / file.name)
    return out


def test_a_run_records_each_switch_as_it_resolved(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ner = sample / "data" / "ner" / "es"
    cfg = build_config(FinetuneConfig, {
        "output_dir": str(sample / "run"), "task": "ner", "model": str(sample / "model"), "progress": False,
        "data": {"format": "conll", **{split: str(ner / f"{split}.conll") for split in ("train", "dev", "test")}},
        "train": {"epochs": 1, "max_length": 32, "batch_size": 8, "lr": 1e-3}, "eval": {"bootstrap": 10}})
    assert finetune(cfg) == 0
    train = yaml.safe_load((sample / "run" / "config.yaml").read_text(encoding="utf-8"))["train"]
    assert {k: train[k] for k in ("precision", "attention", "fused_optimizer", "group_by_length")} == \
        {"precision": "fp32", "attention": "sdpa", "fused_optimizer": True, "group_by_length": False}
    results = json.loads((sample / "run" / "results.json").read_text(encoding="utf-8"))
    assert results["hparams"]["precision"] == "fp32" and results["device"] == "cpu"


# ----------------------------------------------------------------------------- optimizer and loop


def test_fused_adamw_steps_close_to_the_loop() -> None:
    """The same tiny model, batches and schedule, stepped by fused and by unfused AdamW."""
    params = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = BertForTokenClassification(BertConfig(**TINY, num_labels=3, hidden_dropout_prob=0.0,
                                                      attention_probs_dropout_prob=0.0))
        t = TrainConfig(lr=1e-2, fused_optimizer=fused)
        optimizer, schedule = build_optimizer(model, t, total_steps=6)
        assert all(group["fused"] is (fused or None) for group in optimizer.param_groups)
        generator = torch.Generator().manual_seed(1)
        for _ in range(6):
            ids = torch.randint(1, 50, (4, 12), generator=generator)
            labels = torch.randint(0, 3, (4, 12), generator=generator)
            F.cross_entropy(model(input_ids=ids).logits.flatten(0, 1), labels.flatten()).backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        params[fused] = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.manual_seed(0)
    start = BertForTokenClassification(BertConfig(**TINY, num_labels=3)).state_dict()
    for name, fused in params[True].items():
        assert torch.allclose(fused, params[False][name], rtol=1e-4, atol=1e-5), name
    assert any(not torch.equal(p, start[n]) for n, p in params[True].items())  # it did train


def test_collate_pads_ids_with_the_pad_id_and_labels_with_minus_100() -> None:
    ids, mask, labels = collate([([5, 6, 7], [1, 0, 2]), ([8], [1]), ([9, 10], [0, 0])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]] and ids.dtype == torch.long
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert labels.tolist() == [[1, 0, 2], [1, -100, -100], [0, 0, -100]] and labels.dtype == torch.long
    assert collate([([5, 6], 1), ([7], 0)], pad_id=0)[2].tolist() == [1, 0]  # screening: one label each


class RecordingTask:
    """The loss of a task, each step's value kept (read back here, as the loop itself no longer does)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        self.losses.append(loss.item())
        return loss


class RecordingMonitor:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []

    def log(self, step: int, prefix: str, metrics: dict[str, float]) -> None:
        self.logged.append((step, metrics))


def test_logged_train_loss_is_the_mean_since_the_last_log() -> None:
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(**TINY, num_labels=3))
    rng = random.Random(0)
    examples = [([rng.randint(1, 49) for _ in range(n)], [rng.randint(0, 2) for _ in range(n)])
                for n in (min(n, 60) for n in skewed_lengths(70))]  # within max_position_embeddings
    t = TrainConfig(batch_size=8, log_every=3, precision="fp32", fused_optimizer=True)
    optimizer, schedule = build_optimizer(model, t, total_steps=9)
    task, monitor = RecordingTask(), RecordingMonitor()
    loop = Loop(model, task, examples, optimizer, schedule, t, 0, CPU, monitor)  # type: ignore[arg-type]
    assert _train_epoch(loop, epoch=0, step=0) == 9
    assert [step for step, _ in monitor.logged] == [3, 6, 9]
    for k, (step, metrics) in enumerate(monitor.logged):
        since_last = task.losses[3 * k:step]
        assert metrics["loss"] == pytest.approx(sum(since_last) / len(since_last), rel=1e-12)
        assert metrics["epoch"] == step / 9 and isinstance(metrics["loss"], float)
