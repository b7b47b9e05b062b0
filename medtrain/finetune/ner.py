"""NER as a task: BRAT or CoNLL documents -> sentence windows -> IOB2 tags -> entity scores and .ann files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medtrain import metrics
from medtrain.data import ner
from medtrain.finetune.cache import FeatureCache
from medtrain.finetune.config import SPLITS, EvalConfig, FinetuneConfig
from medtrain.finetune.task import PRF, Example, Predict, Task, with_languages


@dataclasses.dataclass
class NerPart:
    """One split of one language: its documents, their sentences, and the encoded sentence windows."""

    path: Path
    docs: list[Any]
    sentences: list[Any]
    features: list[Any] = dataclasses.field(default_factory=list)


class NerTask(Task):
    """Token classification; labels unified over every split and language, so ids never shift."""

    unit = "document"

    def read(self, cfg: FinetuneConfig) -> None:
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
        for part in (part for parts in self.parts.values() for part in parts.values()):
            data = cache.get(part.path, lambda: [dataclasses.asdict(f) for f in
                                                 ner.encode(part.sentences, tokenizer, label2id, max_length)])
            part.features = [ner.Feature(**f) for f in data]

    def train_examples(self) -> list[Example]:
        return [(f.input_ids, f.labels) for p in self.parts["train"].values() for f in p.features]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

    def sizes(self) -> dict[str, dict[str, dict[str, int]]]:
        return {split: {lang: {"documents": len(p.docs), "sentences": len(p.sentences), "sequences": len(p.features)}
                        for lang, p in parts.items()} for split, parts in self.parts.items()}

    def predict(self, predict: Predict, split: str) -> dict[str, list[list[str]]]:
        """IOB2 tags per sentence, per language."""
        id2label = dict(enumerate(self.labels))
        return {lang: ner.decode(part.features, predict([f.input_ids for f in part.features]), id2label,
                                 part.sentences) for lang, part in self.parts[split].items()}

    def score_dev(self, predictions: dict[str, list[list[str]]]) -> dict[str, Any]:
        per_language = {}
        total: list[metrics.Counts] = []
        for lang, part in self.parts["dev"].items():
            counts = metrics.add_counts(*self._doc_counts(part, predictions[lang]))
            per_language[lang] = metrics.prf(*metrics.micro_counts(counts))
            total.append(counts)
        return with_languages(per_language, metrics.prf(*metrics.micro_counts(metrics.add_counts(*total))))

    def score_test(self, predictions: dict[str, list[list[str]]], dev: dict[str, Any],
                   ev: EvalConfig) -> dict[str, Any]:
        return {lang: self._report(part, predictions[lang], ev) for lang, part in self.parts["test"].items()}

    def write_predictions(self, predictions: dict[str, list[list[str]]], dev: dict[str, Any], folder: Path) -> None:
        """BRAT .ann (and its .txt) per document; CoNLL documents get their synthetic text."""
        for lang, part in self.parts["test"].items():
            predicted = self._predicted_entities(part, predictions[lang])
            for doc in part.docs:
                ner.write_brat(doc, predicted[doc.doc_id], folder / lang / f"{doc.doc_id}.ann")

    def _doc_counts(self, part: NerPart, tags: list[list[str]]) -> list[metrics.Counts]:
        """Entity counts per bootstrap unit (metrics.unit_counts)."""
        return list(metrics.unit_counts([s.doc_id for s in part.sentences], [s.tags for s in part.sentences],
                                        tags).values())

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
