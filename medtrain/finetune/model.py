"""The model side of a run: the device and its fast path, the pretrained encoder with a new head, batches,
prediction, the optimizer."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices  # what AdamW(fused=True) checks

from medtrain.errors import UserError
from medtrain.finetune.config import TrainConfig
from medtrain.finetune.task import Example, Predict, Task
from medtrain.model import load_pretrained


def resolve_device_defaults(t: TrainConfig) -> torch.device:
    """The device, and the fast-path switches left unset resolved for it (precision, fused AdamW), so config.yaml
    records what ran; a switch this machine cannot honour stops the run before it writes anything."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()  # CPU autocast has bf16 (slow on most CPUs)
    if t.precision == "bf16" and not bf16:
        raise UserError("train.precision: this GPU has no bf16 (Ampere or newer has it); set train.precision=fp32 "
                        "or leave it unset")
    if t.precision is None:
        t.precision = "bf16" if device.type == "cuda" and bf16 else "fp32"
    fused = device.type in _get_fused_kernels_supported_devices()
    if t.fused_optimizer and not fused:
        raise UserError(f"train.fused_optimizer: this PyTorch has no fused AdamW on {device.type}; set "
                        "train.fused_optimizer=false or leave it unset")
    if t.fused_optimizer is None:
        t.fused_optimizer = fused
    return device


def load_model(task: Task, path: Path, t: TrainConfig, vocab_size: int) -> Any:
    """The pretrained encoder with a new head, initialised from t.seed, with t.attention; left unset, it becomes
    the attention the model runs (sdpa where its architecture has it, else eager), for config.yaml."""
    torch.manual_seed(t.seed)
    labels = dict(enumerate(task.labels))
    try:
        model = load_pretrained(task.model_class(), path, num_labels=len(labels), id2label=labels,
                                label2id={v: k for k, v in labels.items()}, attn_implementation=t.attention)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load the model ({exc.__class__.__name__})", path) from None
    if t.max_length > model.config.max_position_embeddings:
        raise UserError(f"train.max_length {t.max_length} exceeds the model's max_position_embeddings "
                        f"({model.config.max_position_embeddings})", path)
    if vocab_size > model.config.vocab_size:
        raise UserError(f"the tokenizer ({vocab_size} tokens) is larger than the model's vocabulary "
                        f"({model.config.vocab_size})", path)
    t.attention = t.attention or model.config._attn_implementation
    return model


def pad(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Sequences padded with `value` to the longest, built by one tensor call (not one copy per sequence: NER
    batches are short, so per-sequence work is a visible share of a CPU step)."""
    width = max(len(s) for s in sequences)
    return torch.tensor([[*s, *[value] * (width - len(s))] for s in sequences], dtype=torch.long)


def collate(batch: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, attention mask and labels (token labels padded with -100, which the loss ignores)."""
    ids = pad([x for x, _ in batch], pad_id)
    labels = [y for _, y in batch]
    target = pad(labels, -100) if isinstance(labels[0], list) else torch.tensor(labels, dtype=torch.long)
    return ids, (ids != pad_id).long(), target


def to_device(tensors: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Host -> device copies that do not make the host wait (CUDA: from pinned memory), so it prepares the next
    batch while the device computes; on CPU the tensors as they are."""
    if device.type != "cuda":
        return list(tensors)
    return [x.pin_memory().to(device, non_blocking=True) for x in tensors]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16: the forward pass (and loss) under bfloat16 autocast, the weights left in fp32; fp32: nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_predict(model: Any, batch_size: int, pad_id: int, device: torch.device, precision: str) -> Predict:
    """Logits per sequence, trimmed to its length, in input order. Batches are cut from the sequences sorted by
    length (longest first), so each is padded little; the logits go back to input order."""

    def predict(sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        model.eval()
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # stable: ties keep input order
        out: list[np.ndarray] = [np.empty(0)] * len(sequences)
        with torch.no_grad(), autocast(precision, device):
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                [ids] = to_device([pad([sequences[i] for i in chunk], pad_id)], device)
                logits = model(input_ids=ids, attention_mask=(ids != pad_id).long()).logits.float().cpu().numpy()
                for j, i in enumerate(chunk):
                    out[i] = logits[j, :len(sequences[i])] if logits.ndim == 3 else logits[j]
        model.train()
        return out

    return predict


def build_optimizer(model: Any, t: TrainConfig, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no decay on biases and LayerNorm; fused as t.fused_optimizer says) and a linear warmup then linear
    decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=t.lr,
                                  fused=t.fused_optimizer or None)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(t.warmup_ratio * total_steps), total_steps)
    return optimizer, schedule
