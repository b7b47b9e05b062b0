"""The model side of a run: the pretrained encoder with a new head, batches, prediction, the optimizer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtrain.errors import UserError
from medtrain.finetune.config import TrainConfig
from medtrain.finetune.task import Example, Predict, Task
from medtrain.model import load_pretrained


def load_model(task: Task, path: Path, seed: int, max_length: int, vocab_size: int) -> Any:
    """The pretrained encoder with a new head, initialised from `seed`."""
    torch.manual_seed(seed)
    labels = dict(enumerate(task.labels))
    try:
        model = load_pretrained(task.model_class(), path, num_labels=len(labels), id2label=labels,
                                label2id={v: k for k, v in labels.items()})
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load the model ({exc.__class__.__name__})", path) from None
    if max_length > model.config.max_position_embeddings:
        raise UserError(f"train.max_length {max_length} exceeds the model's max_position_embeddings "
                        f"({model.config.max_position_embeddings})", path)
    if vocab_size > model.config.vocab_size:
        raise UserError(f"the tokenizer ({vocab_size} tokens) is larger than the model's vocabulary "
                        f"({model.config.vocab_size})", path)
    return model


def pad(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    out = torch.full((len(sequences), max(len(s) for s in sequences)), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def collate(batch: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, attention mask and labels (token labels padded with -100, which the loss ignores)."""
    ids = pad([x for x, _ in batch], pad_id)
    labels = [y for _, y in batch]
    target = pad(labels, -100) if isinstance(labels[0], list) else torch.tensor(labels, dtype=torch.long)
    return ids, (ids != pad_id).long(), target


def make_predict(model: Any, batch_size: int, pad_id: int, device: torch.device) -> Predict:
    """Logits per sequence, trimmed to its length, in input order."""

    def predict(sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        model.eval()
        out: list[np.ndarray] = []
        with torch.no_grad():
            for i in range(0, len(sequences), batch_size):
                chunk = sequences[i:i + batch_size]
                ids = pad(chunk, pad_id).to(device)
                logits = model(input_ids=ids, attention_mask=(ids != pad_id).long()).logits.float().cpu().numpy()
                out.extend(logits[j, :len(s)] if logits.ndim == 3 else logits[j] for j, s in enumerate(chunk))
        model.train()
        return out

    return predict


def build_optimizer(model: Any, t: TrainConfig, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no decay on biases and LayerNorm) and a linear warmup then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=t.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(t.warmup_ratio * total_steps), total_steps)
    return optimizer, schedule
