"""Patient screening as a task: notes -> windows -> window scores -> one score per patient -> a threshold
chosen on dev -> patient-level metrics and one CSV of decisions per test language."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medtrain import metrics
from medtrain.data import documents
from medtrain.finetune.cache import FeatureCache
from medtrain.finetune.config import SPLITS, EvalConfig, FinetuneConfig
from medtrain.finetune.task import PRF, Example, Predict, Task, with_languages
from medtrain.io import atomic_open


class ScreeningTask(Task):
    """Patient classification from notes: windows are classified, a patient's score aggregates them."""

    unit = "patient"

    def read(self, cfg: FinetuneConfig) -> None:
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

    def train_examples(self) -> list[Example]:
        return [(w, p.labels[owner]) for p in self.parts["train"].values()
                for w, owner in zip(p.windows, p.window_patient)]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and self.weight.device != logits.device:
            self.weight = self.weight.to(logits.device)  # once, not a host -> device copy every step
        return F.cross_entropy(logits.float(), labels, weight=self.weight)

    def sizes(self) -> dict[str, dict[str, dict[str, int]]]:
        return {split: {lang: {"patients": len(p.patient_ids), "positives": sum(p.labels), "notes": p.notes,
                               "windows": len(p.windows)} for lang, p in parts.items()}
                for split, parts in self.parts.items()}

    def predict(self, predict: Predict, split: str) -> dict[str, list[float]]:
        """One score (probability of positive) per patient, per language."""
        return {lang: self._scores(predict, part) for lang, part in self.parts[split].items()}

    def _scores(self, predict: Predict, part: documents.EncodedSplit) -> list[float]:
        logits = np.stack(predict(part.windows)) if part.windows else np.zeros((0, 2))
        positive = torch.softmax(torch.from_numpy(logits).float(), dim=-1)[:, 1].tolist()
        return documents.aggregate_scores(positive, part.window_patient, len(part.patient_ids), self.cfg.aggregate)

    def score_dev(self, predictions: dict[str, list[float]]) -> dict[str, Any]:
        """Patient-level metrics at the threshold that maximises F1 on all dev patients pooled."""
        scored = {lang: (p.labels, predictions[lang]) for lang, p in self.parts["dev"].items()}
        labels = [y for ys, _ in scored.values() for y in ys]
        scores = [s for _, ss in scored.values() for s in ss]
        threshold = metrics.choose_threshold(labels, scores)
        pooled = metrics.classification_scores(labels, scores, threshold)
        per_language = {lang: metrics.classification_scores(ys, ss, threshold) for lang, (ys, ss) in scored.items()}
        keep = ("f1", "precision", "recall", "auroc", "auprc", "threshold")
        return with_languages(per_language, {k: pooled[k] for k in keep})

    def score_test(self, predictions: dict[str, list[float]], dev: dict[str, Any], ev: EvalConfig) -> dict[str, Any]:
        """Each test language at the dev threshold, with intervals over patients."""
        threshold = dev["threshold"]
        results = {}
        for lang, part in self.parts["test"].items():
            scores = predictions[lang]
            scored = metrics.classification_scores(part.labels, scores, threshold)
            rows = np.column_stack([part.labels, scores]).astype(float)
            report: dict[str, Any] = {
                name: metrics.with_interval(scored[name], rows, metrics.classification_metric(name, threshold),
                                            ev.bootstrap, ev.bootstrap_seed, ev.alpha)
                for name in (*PRF, "auroc", "auprc")}
            report.update(threshold=threshold, confusion_matrix=scored["confusion_matrix"],
                          reasons=scored["reasons"], bootstrap_unit="patient")
            results[lang] = report
        return results

    def write_predictions(self, predictions: dict[str, list[float]], dev: dict[str, Any], folder: Path) -> None:
        """<lang>.csv, one row per patient: id, score, decision at the dev threshold, label; never note text."""
        for lang, part in self.parts["test"].items():
            with atomic_open(folder / f"{lang}.csv", "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["patient_id", "score", "predicted", "label"])
                for patient, score, label in zip(part.patient_ids, predictions[lang], part.labels):
                    writer.writerow([patient, f"{score:.6f}", int(score >= dev["threshold"]), label])
