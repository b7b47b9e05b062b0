"""One fine-tuning run: a task x a model folder x training/evaluation languages x hyper-parameters x a seed.

    medtrain finetune CONFIG [k=v ...]

Fine-tunes a local Hugging Face BERT folder (e.g. a `medtrain pretrain` export) with a newly initialised head,
in this process with plain PyTorch (AdamW, linear warmup and decay): NER (BRAT or CoNLL, token
classification) or patient screening (JSONL or CSV notes, sequence classification over windows). It trains on
the mix of training languages, evaluates on dev after every epoch, keeps the epoch with the best dev F1, and
evaluates every test language separately. The run folder:

    config.yaml       the resolved config
    history.jsonl     train loss and dev metrics by step; the same scalars in tensorboard/
    checkpoint/       last.pt (model, optimizer, schedule, RNG, epoch) and best-eNNN.pt (best weights so far);
                      deleted once results.json is written
    cache/            tokenized features, keyed by tokenizer fingerprint and file checksums (see cache_dir)
    predictions/      NER: <lang>/<doc>.ann + .txt (BRAT); screening: <lang>.csv, one row per patient
    model/            the best epoch's model and tokenizer, with save_model: true
    results.json      written last, atomically: its presence marks the run complete

results.json holds the run's identity (task, model, format, seed, train/dev/eval languages, hparams, labels,
sizes, epochs, best_epoch, train_time_s, device, bootstrap settings), `dev` (the best epoch's pooled dev metrics,
f1_<lang> per language when there are several; screening adds the chosen threshold) and `test`, per language:

    f1, precision, recall (+ auroc, auprc for screening): {value, lo, hi}, a percentile bootstrap interval over
        documents (NER) or patients (screening); null with a reason where undefined (e.g. one class)
    NER: micro, macro, per_type (seqeval strict IOB2), exact_span (character offsets against every gold BRAT
        entity; null for CoNLL), unseen_labels (gold labels never seen in training)
    screening: threshold (chosen on dev), confusion_matrix {tn, fp, fn, tp}, reasons

A killed run resumes after its last finished epoch and gives the same results as an uninterrupted one: the
data order is a function of (seed, epoch), and weights, optimizer, schedule and RNG come from the checkpoint.
Running a complete run again does nothing. Only numbers reach logs, TensorBoard and results.json.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from medtrain import metrics
from medtrain.checkpoint import rng_state, set_rng_state
from medtrain.config import config_to_dict, save_resolved
from medtrain.data import documents, ner
from medtrain.data.documents import ScreeningConfig
from medtrain.data.tokenizer import fingerprint, load_tokenizer
from medtrain.errors import UserError
from medtrain.io import atomic_open, replace_dir_atomic, sha256_file, write_json_atomic, write_text_atomic
from medtrain.monitor import Monitor

RESULTS = "results.json"
CHECKPOINT = "checkpoint"
SPLITS = ("train", "dev", "test")
FORMATS = {"ner": ("brat", "conll"), "screening": ("jsonl", "csv")}
PRF = ("f1", "precision", "recall")
CHECKPOINT_VERSION = 1

Predict = Callable[[Sequence[Sequence[int]]], list[np.ndarray]]
"""Token id sequences -> logits per sequence: (length, labels) for NER, (labels,) for screening."""


# ----------------------------------------------------------------------------- config


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
        if self.data.format not in FORMATS[self.task]:
            raise ValueError(f"data.format {self.data.format} does not fit task {self.task}: "
                             f"use {' or '.join(FORMATS[self.task])}")
        if self.task == "screening" and self.screening.stride >= self.train.max_length - 2:
            raise ValueError("screening.stride must be smaller than train.max_length - 2")


# ----------------------------------------------------------------------------- inputs and the feature cache


def check_inputs(cfg: FinetuneConfig) -> None:
    """Every path exists and the model folder looks like a Hugging Face model, before anything is written."""
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


def source_checksum(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents), so a changed input changes the key."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


class FeatureCache:
    """Tokenized features as JSON, keyed by the tokenizer, the encoding code, its settings and the input file.

    Writes are atomic, so runs sharing one cache folder (a grid) never see a half-written file.
    """

    def __init__(self, folder: Path, tokenizer_dir: Path, encoder_module: Any, settings: dict[str, Any]):
        self.folder = folder
        self.identity = {"tokenizer": fingerprint(tokenizer_dir), "encoder": sha256_file(encoder_module.__file__),
                         **settings}

    def get(self, source: Path, build: Callable[[], Any]) -> Any:
        key = json.dumps({**self.identity, "source": source_checksum(source)}, sort_keys=True)
        path = self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        data = build()
        write_text_atomic(path, json.dumps(data, separators=(",", ":")))
        return data


# ----------------------------------------------------------------------------- tasks


def _pooled(per_language: dict[str, dict[str, Any]], pooled: dict[str, Any]) -> dict[str, Any]:
    """Dev metrics: pooled ones, plus f1_<lang> per language when there are several."""
    extra = {f"f1_{lang}": m["f1"] for lang, m in per_language.items()} if len(per_language) > 1 else {}
    return {**pooled, **extra}


@dataclasses.dataclass
class NerPart:
    path: Path
    docs: list[Any]
    sentences: list[Any]
    features: list[Any] = dataclasses.field(default_factory=list)


class NerTask:
    """Token classification; labels unified over every split and language, so ids never shift."""

    unit = "document"

    def __init__(self, cfg: FinetuneConfig):
        self.format = cfg.data.format
        self.parts: dict[str, dict[str, NerPart]] = {}
        for split in SPLITS:
            self.parts[split] = {}
            for lang, path in getattr(cfg.data, split).items():
                docs = ner.read_ner(path, self.format)
                self.parts[split][lang] = NerPart(path, docs, [s for d in docs for s in d.sentences])
        self.labels = ner.label_list([p.docs for parts in self.parts.values() for p in parts.values()])
        self.train_tags = {t for p in self.parts["train"].values() for s in p.sentences for t in s.tags}

    def model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def encode(self, tokenizer: Any, max_length: int, cache_dir: Path, tokenizer_dir: Path) -> None:
        label2id = {label: i for i, label in enumerate(self.labels)}
        cache = FeatureCache(cache_dir, tokenizer_dir, ner, {"task": "ner", "format": self.format,
                                                             "max_length": max_length, "labels": self.labels})
        for part in self._all_parts():
            data = cache.get(part.path, lambda: [dataclasses.asdict(f) for f in
                                                 ner.encode(part.sentences, tokenizer, label2id, max_length)])
            part.features = [ner.Feature(**f) for f in data]

    def _all_parts(self) -> list[NerPart]:
        return [part for parts in self.parts.values() for part in parts.values()]

    def train_examples(self) -> list[tuple[list[int], list[int]]]:
        return [(f.input_ids, f.labels) for p in self.parts["train"].values() for f in p.features]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

    def sizes(self) -> dict[str, dict[str, dict[str, int]]]:
        return {split: {lang: {"documents": len(p.docs), "sentences": len(p.sentences), "sequences": len(p.features)}
                        for lang, p in parts.items()} for split, parts in self.parts.items()}

    def _tags(self, predict: Predict, part: NerPart) -> list[list[str]]:
        logits = predict([f.input_ids for f in part.features])
        return ner.decode(part.features, logits, dict(enumerate(self.labels)), part.sentences)

    def _doc_counts(self, part: NerPart, tags: list[list[str]]) -> list[metrics.Counts]:
        """Entity counts per bootstrap unit (metrics.unit_counts)."""
        return list(metrics.unit_counts([s.doc_id for s in part.sentences], [s.tags for s in part.sentences],
                                        tags).values())

    def evaluate_dev(self, predict: Predict) -> dict[str, Any]:
        per_language = {}
        total: list[metrics.Counts] = []
        for lang, part in self.parts["dev"].items():
            counts = metrics.add_counts(*self._doc_counts(part, self._tags(predict, part)))
            per_language[lang] = metrics.prf(*metrics.micro_counts(counts))
            total.append(counts)
        return _pooled(per_language, metrics.prf(*metrics.micro_counts(metrics.add_counts(*total))))

    def evaluate_test(self, predict: Predict, dev: dict[str, Any], out: Path, ev: EvalConfig) -> dict[str, Any]:
        results = {}
        for lang, part in self.parts["test"].items():
            tags = self._tags(predict, part)
            results[lang] = self._report(part, tags, ev)
            self._write_predictions(part, tags, out, lang)
        return results

    def _report(self, part: NerPart, tags: list[list[str]], ev: EvalConfig) -> dict[str, Any]:
        units = self._doc_counts(part, tags)
        scores = metrics.entity_scores(metrics.add_counts(*units))
        rows = np.array([metrics.micro_counts(c) for c in units], dtype=float)
        report: dict[str, Any] = {
            name: metrics.with_interval(scores["micro"][name], rows, metrics.micro_metric(name), ev.bootstrap,
                                        ev.bootstrap_seed, ev.alpha) for name in PRF}
        gold_tags = {t for s in part.sentences for t in s.tags}
        report.update(scores, bootstrap_unit="document" if len(part.docs) > 1 else "sentence",
                      unseen_labels=sorted(gold_tags - self.train_tags - {"O"}),
                      exact_span=self._exact_span(part, tags) if self.format == "brat" else None)
        return report

    def _predicted_entities(self, part: NerPart, tags: list[list[str]]) -> dict[Any, list[Any]]:
        by_doc: dict[Any, list[Any]] = {d.doc_id: [] for d in part.docs}
        for sentence, sentence_tags in zip(part.sentences, tags):
            by_doc[sentence.doc_id].extend(ner.tags_to_entities(sentence, sentence_tags))
        return by_doc

    def _exact_span(self, part: NerPart, tags: list[list[str]]) -> dict[str, Any]:
        """Exact character-offset matches against every gold BRAT entity (nested and discontinuous included)."""
        predicted = self._predicted_entities(part, tags)
        return ner.corpus_span_scores([d.entities for d in part.docs], [predicted[d.doc_id] for d in part.docs])

    def _write_predictions(self, part: NerPart, tags: list[list[str]], out: Path, lang: str) -> None:
        """BRAT .ann (and its .txt) per document; CoNLL documents get their synthetic text."""
        predicted = self._predicted_entities(part, tags)
        for doc in part.docs:
            ner.write_brat(doc, predicted[doc.doc_id], out / lang / f"{doc.doc_id}.ann")


class ScreeningTask:
    """Patient classification from notes: windows are classified, a patient's score aggregates them."""

    unit = "patient"

    def __init__(self, cfg: FinetuneConfig):
        self.format = cfg.data.format
        self.cfg = cfg.screening
        self.labels = ["negative", "positive"]
        self.paths = {split: dict(getattr(cfg.data, split)) for split in SPLITS}
        self.notes = {split: {lang: documents.read_notes(path, self.format) for lang, path in paths.items()}
                      for split, paths in self.paths.items()}
        self.parts: dict[str, dict[str, documents.EncodedSplit]] = {}
        self.weight: torch.Tensor | None = None

    def model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def encode(self, tokenizer: Any, max_length: int, cache_dir: Path, tokenizer_dir: Path) -> None:
        cache = FeatureCache(cache_dir, tokenizer_dir, documents, {"task": "screening", "format": self.format,
                                                                   "max_length": max_length,
                                                                   "stride": self.cfg.stride})
        for split, paths in self.paths.items():
            self.parts[split] = {}
            for lang, path in paths.items():
                notes = self.notes[split][lang]
                data = cache.get(path, lambda: documents.encode_notes(notes, tokenizer, max_length,
                                                                      self.cfg.stride).to_json())
                self.parts[split][lang] = documents.EncodedSplit.from_json(data)
        if self.cfg.class_weights:
            self.weight = torch.tensor(documents.class_weights([label for _, label in self.train_examples()]))

    def train_examples(self) -> list[tuple[list[int], int]]:
        return [(w, p.labels[owner]) for p in self.parts["train"].values()
                for w, owner in zip(p.windows, p.window_patient)]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(logits.float(), labels, weight=weight)

    def sizes(self) -> dict[str, dict[str, dict[str, int]]]:
        return {split: {lang: {"patients": len(p.patient_ids), "positives": sum(p.labels), "notes": p.notes,
                               "windows": len(p.windows)} for lang, p in parts.items()}
                for split, parts in self.parts.items()}

    def _scores(self, predict: Predict, part: documents.EncodedSplit) -> list[float]:
        logits = np.stack(predict(part.windows)) if part.windows else np.zeros((0, 2))
        positive = torch.softmax(torch.from_numpy(logits).float(), dim=-1)[:, 1].tolist()
        return documents.aggregate_scores(positive, part.window_patient, len(part.patient_ids), self.cfg.aggregate)

    def evaluate_dev(self, predict: Predict) -> dict[str, Any]:
        """Patient-level metrics at the threshold that maximises F1 on all dev patients pooled."""
        scored = {lang: (p.labels, self._scores(predict, p)) for lang, p in self.parts["dev"].items()}
        labels = [y for ys, _ in scored.values() for y in ys]
        scores = [s for _, ss in scored.values() for s in ss]
        threshold = metrics.choose_threshold(labels, scores)
        pooled = metrics.classification_scores(labels, scores, threshold)
        per_language = {lang: metrics.classification_scores(ys, ss, threshold) for lang, (ys, ss) in scored.items()}
        keep = ("f1", "precision", "recall", "auroc", "auprc", "threshold")
        return _pooled(per_language, {k: pooled[k] for k in keep})

    def evaluate_test(self, predict: Predict, dev: dict[str, Any], out: Path, ev: EvalConfig) -> dict[str, Any]:
        threshold = dev["threshold"]
        results = {}
        for lang, part in self.parts["test"].items():
            scores = self._scores(predict, part)
            scored = metrics.classification_scores(part.labels, scores, threshold)
            rows = np.column_stack([part.labels, scores]).astype(float)
            report: dict[str, Any] = {
                name: metrics.with_interval(scored[name], rows, metrics.classification_metric(name, threshold),
                                            ev.bootstrap, ev.bootstrap_seed, ev.alpha)
                for name in (*PRF, "auroc", "auprc")}
            report.update(threshold=threshold, confusion_matrix=scored["confusion_matrix"],
                          reasons=scored["reasons"], bootstrap_unit="patient")
            results[lang] = report
            self._write_predictions(part, scores, threshold, out / f"{lang}.csv")
        return results

    @staticmethod
    def _write_predictions(part: documents.EncodedSplit, scores: list[float], threshold: float, path: Path) -> None:
        """One row per patient: id, score, decision, label; never note text."""
        with atomic_open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["patient_id", "score", "predicted", "label"])
            for patient, score, label in zip(part.patient_ids, scores, part.labels):
                writer.writerow([patient, f"{score:.6f}", int(score >= threshold), label])


def build_task(cfg: FinetuneConfig) -> NerTask | ScreeningTask:
    return NerTask(cfg) if cfg.task == "ner" else ScreeningTask(cfg)


# ----------------------------------------------------------------------------- model, batches, optimizer


def load_model(task: NerTask | ScreeningTask, path: Path, seed: int, max_length: int, vocab_size: int) -> Any:
    """The pretrained encoder with a new head, initialised from `seed`."""
    torch.manual_seed(seed)
    labels = dict(enumerate(task.labels))
    try:
        model = task.model_class().from_pretrained(str(path), local_files_only=True, num_labels=len(labels),
                                                   id2label=labels, label2id={v: k for k, v in labels.items()})
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


def collate(batch: Sequence[tuple[list[int], Any]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of an epoch depends only on (seed, epoch), so a resumed run replays it exactly."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


# ----------------------------------------------------------------------------- checkpoint


def best_file(folder: Path, epoch: int) -> Path:
    return folder / f"best-e{epoch:03d}.pt"


def save_checkpoint(folder: Path, state: dict[str, Any], best_weights: dict[str, torch.Tensor] | None) -> None:
    """best-eNNN.pt first (only when the best epoch changed), then last.pt, whose best epoch names it; older
    bests are removed last. A kill between any two writes leaves a last.pt whose files all exist."""
    best = best_file(folder, state["best"]["epoch"])
    if best_weights is not None:
        with atomic_open(best, "wb") as f:
            torch.save(best_weights, f)
    with atomic_open(folder / "last.pt", "wb") as f:
        torch.save(state, f)
    for stale in folder.glob("best-e*.pt"):
        if stale != best:
            stale.unlink()


def load_checkpoint(folder: Path, model: Any, optimizer: Any, schedule: Any) -> dict[str, Any] | None:
    """Restore model, optimizer, schedule and RNG from last.pt; its state (epoch, step, best, timing)."""
    path = folder / "last.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}: delete the "
                        "checkpoint folder to start over", folder)
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    schedule.load_state_dict(state.pop("schedule"))
    set_rng_state(state.pop("rng"))
    return state


def check_same_config(cfg: FinetuneConfig) -> None:
    """An unfinished run resumes only under the config it started with (the progress bar aside)."""
    saved_path = cfg.output_dir / "config.yaml"
    if not (cfg.output_dir / CHECKPOINT / "last.pt").is_file() or not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    current = config_to_dict(cfg)
    if {k: v for k, v in saved.items() if k != "progress"} != {k: v for k, v in current.items() if k != "progress"}:
        raise UserError("this output_dir holds an unfinished run with a different config.yaml: use another "
                        "output_dir, or delete this one to start over", cfg.output_dir)


# ----------------------------------------------------------------------------- the run


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}


def _train_epoch(model: Any, task: NerTask | ScreeningTask, examples: list[tuple[list[int], Any]],
                 order: list[int], optimizer: Any, schedule: Any, t: TrainConfig, pad_id: int,
                 device: torch.device, monitor: Monitor, step: int) -> int:
    """One pass over the training examples; returns the new global step."""
    losses: list[float] = []
    starts = range(0, len(order), t.batch_size)
    for k, start in enumerate(starts):
        ids, mask, labels = (x.to(device) for x in collate([examples[i] for i in order[start:start + t.batch_size]],
                                                           pad_id))
        loss = task.loss(model(input_ids=ids, attention_mask=mask).logits, labels)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(loss.item())
        if step % t.log_every == 0 or k == len(starts) - 1:
            monitor.log(step, "train", {"loss": sum(losses) / len(losses), "lr": lr})
            losses = []
    return step


def finetune(cfg: FinetuneConfig) -> int:
    """Build in a fixed order (inputs -> data -> model -> run folder -> features -> optimizer -> checkpoint ->
    monitor), then loop over epochs, then evaluate the best epoch on every test language."""
    out, t = cfg.output_dir, cfg.train
    if (out / RESULTS).is_file():
        print(f"{out}: already complete ({RESULTS} exists); nothing to do")
        return 0
    # 1. Inputs and data: every path checked and every file read before the run folder is touched.
    check_inputs(cfg)
    tokenizer = load_tokenizer(cfg.model)
    task = build_task(cfg)
    # 2. Model: the pretrained encoder and a new head, initialised from the seed.
    model = load_model(task, cfg.model, t.seed, t.max_length, len(tokenizer))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    # 3. Run folder: the resolved config; an unfinished run with another config is refused.
    check_same_config(cfg)
    save_resolved(cfg, out)
    # 4. Features: tokenized once per (tokenizer, task settings, input file), cached.
    task.encode(tokenizer, t.max_length, cfg.cache_dir or out / "cache", cfg.model)
    examples = task.train_examples()
    steps_per_epoch = math.ceil(len(examples) / t.batch_size)
    # 5. Optimizer and schedule.
    optimizer, schedule = build_optimizer(model, t, steps_per_epoch * t.epochs)
    # 6. Checkpoint: resume after the last finished epoch, RNG included; else start dropout from the seed.
    torch.manual_seed(t.seed + 1)
    state = load_checkpoint(out / CHECKPOINT, model, optimizer, schedule) or {
        "version": CHECKPOINT_VERSION, "epoch": 0, "step": 0, "train_time_s": 0.0,
        "best": {"epoch": 0, "f1": -1.0}}
    if state["epoch"]:
        print(f"resuming {out} after epoch {state['epoch']} of {t.epochs}", file=sys.stderr)
    # 7. Monitor: TensorBoard scalars and history.jsonl (events after the checkpoint are dropped).
    monitor = Monitor(out, 0, state["step"], steps_per_epoch * t.epochs, progress=cfg.progress)
    predict = make_predict(model, t.eval_batch_size, tokenizer.pad_token_id, device)
    model.train()
    for epoch in range(state["epoch"], t.epochs):
        started = time.perf_counter()
        state["step"] = _train_epoch(model, task, examples, epoch_order(len(examples), t.seed, epoch), optimizer,
                                     schedule, t, tokenizer.pad_token_id, device, monitor, state["step"])
        dev = task.evaluate_dev(predict)
        monitor.log(state["step"], "dev", _numbers(dev))
        score = -1.0 if dev["f1"] is None else dev["f1"]  # an undefined F1 still lets the first epoch be best
        improved = score > state["best"]["f1"]
        if improved:
            state["best"] = {"epoch": epoch + 1, "f1": score}
        state.update(epoch=epoch + 1, train_time_s=state["train_time_s"] + time.perf_counter() - started)
        save_checkpoint(out / CHECKPOINT, {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                           "schedule": schedule.state_dict(), "rng": rng_state()},
                        model.state_dict() if improved else None)
    monitor.close()
    write_results(cfg, task, model, tokenizer, predict, state, device)
    return 0


def write_results(cfg: FinetuneConfig, task: NerTask | ScreeningTask, model: Any, tokenizer: Any,
                  predict: Predict, state: dict[str, Any], device: torch.device) -> None:
    """Best weights -> dev (screening: the threshold) -> every test language -> predictions -> results.json."""
    out = cfg.output_dir
    best = best_file(out / CHECKPOINT, state["best"]["epoch"])
    model.load_state_dict(torch.load(best, map_location=device, weights_only=True))
    dev = task.evaluate_dev(predict)
    test: dict[str, Any] = {}
    replace_dir_atomic(out / "predictions", lambda tmp: test.update(task.evaluate_test(predict, dev, tmp, cfg.eval)))
    if cfg.save_model:
        replace_dir_atomic(out / "model", lambda tmp: (model.save_pretrained(str(tmp)),
                                                       tokenizer.save_pretrained(str(tmp))))
    results = {
        "task": cfg.task, "model": str(cfg.model), "seed": cfg.train.seed,
        "train_languages": list(cfg.data.train), "dev_languages": list(cfg.data.dev),
        "eval_languages": list(cfg.data.test), "format": cfg.data.format,
        "hparams": config_to_dict(cfg.train) | ({"screening": config_to_dict(cfg.screening)}
                                                if cfg.task == "screening" else {}),
        "labels": task.labels, "sizes": task.sizes(), "best_epoch": state["best"]["epoch"], "dev": dev,
        "epochs": cfg.train.epochs, "train_time_s": round(state["train_time_s"], 3), "device": str(device),
        "bootstrap": {**config_to_dict(cfg.eval), "unit": task.unit}, "test": test,
    }
    write_json_atomic(out / RESULTS, results)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)  # the run is complete: nothing left to resume
    summary = ", ".join(f"{lang} f1 {_fmt(r['f1']['value'])}" for lang, r in test.items())
    print(f"{out / RESULTS}: best epoch {state['best']['epoch']}, {summary}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
