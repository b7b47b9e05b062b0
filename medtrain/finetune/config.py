"""The fine-tuning config, field by field, and the names other packages read (the grid, `medtrain results`).

Imports no torch, transformers or numpy: `medtrain grid status` and the results tables read these names
without paying for a model library.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from medtrain.data.documents import STRIDE, ScreeningConfig, default_stride
from medtrain.errors import UserError

RESULTS = "results.json"
"""Written last, atomically: its presence marks a run complete."""
CHECKPOINT = "checkpoint"
"""The folder of last.pt and best-eNNN.pt, inside the run folder; deleted once the run is complete."""
SPLITS = ("train", "dev", "test")
FORMATS = {"ner": ("brat", "conll"), "screening": ("jsonl", "csv")}


@dataclasses.dataclass
class DataConfig:
    """Where each split is. A split is one path (named after the folder holding it: data/ner/es/test -> es)
    or a mapping {language: path}; train on a mix by listing several languages under train."""

    format: Literal["brat", "conll", "jsonl", "csv"]
    """brat (a folder of .txt/.ann) or conll (one IOB2 file) for ner; jsonl or csv (notes) for screening."""
    train: Path | dict[str, Path]
    dev: Path | dict[str, Path]
    """Selects the best epoch (dev F1 over all dev languages pooled) and, for screening, the threshold."""
    test: Path | dict[str, Path]
    """Each language is evaluated and reported separately."""

    def __post_init__(self) -> None:
        for split in SPLITS:
            paths = getattr(self, split)
            if isinstance(paths, Path):
                paths = {Path(paths).resolve().parent.name or split: paths}
            if not paths:
                raise ValueError(f"data.{split} needs a path or a mapping {{language: path}}")
            setattr(self, split, dict(paths))


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 3e-5
    batch_size: int = 16
    """Sequences per optimizer step (NER: sentence windows; screening: note windows)."""
    eval_batch_size: int = 64
    seed: int = 0
    """Fixes the head's initialisation, the data order and dropout."""
    max_length: int = 128
    """Tokens per sequence, [CLS] and [SEP] included; at most the model's max_position_embeddings."""
    warmup_ratio: float = 0.1
    """Fraction of all steps with a linear warmup from 0; then a linear decay to 0."""
    weight_decay: float = 0.01
    """AdamW decay, not applied to biases and LayerNorm weights."""
    grad_clip: float = 1.0
    """Gradient norm clip (0: none)."""
    log_every: int = 10
    """Train loss is logged every N steps (and at each epoch's end)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        if not self.lr > 0 or self.max_length < 8:
            raise ValueError("train.lr must be > 0 and train.max_length >= 8")
        if not 0 <= self.warmup_ratio <= 1 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("train.warmup_ratio must be in [0, 1]; weight_decay and grad_clip >= 0")


@dataclasses.dataclass
class EvalConfig:
    bootstrap: int = 1000
    """Bootstrap resamples of the test units (documents for NER, patients for screening) per interval."""
    bootstrap_seed: int = 0
    alpha: float = 0.05
    """1 - confidence level of the intervals (0.05: 95%)."""

    def __post_init__(self) -> None:
        if self.bootstrap < 1 or not 0 < self.alpha < 1:
            raise ValueError("eval.bootstrap must be >= 1 and eval.alpha in (0, 1)")


@dataclasses.dataclass
class FinetuneConfig:
    output_dir: Path
    """The run folder; running again with the same one resumes an unfinished run and skips a complete one."""
    task: Literal["ner", "screening"]
    """ner: token classification (BRAT/CoNLL); screening: patient classification from notes (JSONL/CSV)."""
    model: Path
    """A local Hugging Face model folder (config.json, weights, tokenizer files): a pretraining export or a
    downloaded mBERT. Its head, if any, is replaced by a new one."""
    data: DataConfig
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    screening: ScreeningConfig = dataclasses.field(default_factory=ScreeningConfig)
    """Windowing, aggregation and class weights (screening only)."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    cache_dir: Path | None = None
    """Tokenized features; default <output_dir>/cache. Give runs one shared folder to tokenize once for all."""
    save_model: bool = False
    """Also write the best epoch's model and tokenizer to <output_dir>/model."""
    progress: bool = True

    def __post_init__(self) -> None:
        # Filled in here, so config.yaml and a grid run's signature hold the number used. NER windows no notes;
        # STRIDE keeps its resolved config, and so its grid signature, as it was.
        if self.screening.stride is None:
            self.screening.stride = default_stride(self.train.max_length) if self.task == "screening" else STRIDE
        if self.data.format not in FORMATS[self.task]:
            raise ValueError(f"data.format {self.data.format} does not fit task {self.task}: "
                             f"use {' or '.join(FORMATS[self.task])}")
        if self.task == "screening" and self.screening.stride >= self.train.max_length - 2:
            raise ValueError("screening.stride must be smaller than train.max_length - 2")


def check_inputs(cfg: FinetuneConfig, model_pending: bool = False) -> None:
    """Every path exists and the model folder looks like a Hugging Face model, before anything is written.

    model_pending: the model is the output of a job that has not run yet (a study's grid waiting on its
    pretraining jobs), so only the data paths can be checked now.
    """
    if not model_pending:
        if not cfg.model.is_dir():
            raise UserError("model folder not found (give a local Hugging Face model folder)", cfg.model)
        if not (cfg.model / "config.json").is_file():
            raise UserError("not a Hugging Face model folder (no config.json)", cfg.model)
    want_dir = cfg.data.format == "brat"
    for split in SPLITS:
        for lang, path in getattr(cfg.data, split).items():
            if not (path.is_dir() if want_dir else path.is_file()):
                kind = "folder of .txt/.ann files" if want_dir else f"{cfg.data.format} file"
                raise UserError(f"data.{split}.{lang}: {kind} not found", path)
