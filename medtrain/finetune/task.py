"""The task interface: what the run needs from a task family (NER, screening), and nothing else.

A task reads its splits (read), turns them into token id sequences once (encode), turns the model's logits into
its own predictions (predict: tags per sentence, scores per patient) and those into metrics (score), so the
loop in `run.py` knows no task by name.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from medtrain.finetune.config import EvalConfig, FinetuneConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

Predict: TypeAlias = Callable[[Sequence[Sequence[int]]], "list[np.ndarray]"]
"""Token id sequences -> logits per sequence: (length, labels) for NER, (labels,) for screening."""
Example = tuple[list[int], Any]
"""One training sequence and its target: token labels (NER) or the patient's label (screening)."""
PRF = ("f1", "precision", "recall")


class Task(abc.ABC):
    """One task family. The constructor reads every split, so bad input stops the run before it writes."""

    unit: ClassVar[str]
    """What the bootstrap resamples (and results.json names): document or patient."""
    labels: list[str]
    """Class names by id; the head has one output per label."""

    def __init__(self, cfg: FinetuneConfig):
        self.read(cfg)

    @abc.abstractmethod
    def read(self, cfg: FinetuneConfig) -> None:
        """Read and check every split of cfg.data; set `labels`."""

    @abc.abstractmethod
    def encode(self, tokenizer: Any, max_length: int, cache_dir: Path, tokenizer_dir: Path) -> None:
        """Token id sequences of every split, from the FeatureCache in cache_dir when it has them."""

    @abc.abstractmethod
    def predict(self, predict: Predict, split: str) -> dict[str, Any]:
        """The model's predictions on one split, per language, in the task's own terms."""

    @abc.abstractmethod
    def score_dev(self, predictions: dict[str, Any]) -> dict[str, Any]:
        """Dev metrics, all dev languages pooled (f1 picks the best epoch), plus f1_<lang> when several."""

    @abc.abstractmethod
    def score_test(self, predictions: dict[str, Any], dev: dict[str, Any], ev: EvalConfig) -> dict[str, Any]:
        """Per test language: metrics with bootstrap intervals over `unit`."""

    @abc.abstractmethod
    def write_predictions(self, predictions: dict[str, Any], dev: dict[str, Any], folder: Path) -> None:
        """The test predictions, one file per document or language, never note text."""

    @abc.abstractmethod
    def model_class(self) -> Any:
        """The transformers Auto class whose head fits the task."""

    @abc.abstractmethod
    def train_examples(self) -> list[Example]:
        """The training sequences, in a fixed order (the run shuffles them per epoch)."""

    @abc.abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch."""

    @abc.abstractmethod
    def sizes(self) -> dict[str, dict[str, dict[str, int]]]:
        """Counts per split and language for results.json (documents, sentences, patients, windows...)."""


def with_languages(per_language: dict[str, dict[str, Any]], pooled: dict[str, Any]) -> dict[str, Any]:
    """Dev metrics: pooled ones, plus f1_<lang> per language when there are several."""
    extra = {f"f1_{lang}": m["f1"] for lang, m in per_language.items()} if len(per_language) > 1 else {}
    return {**pooled, **extra}
