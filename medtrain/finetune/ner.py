"""NER as a task: BRAT, column or CoNLL-U documents -> windows -> IOB2 tags -> entity scores and .ann files.

Every split and language is read from its own source (format, columns) into the run's label space (`labels`).
The label ids are the training languages' types. A dev or test language is scored on the types it shares with
training (`scored_types`); one sharing none is an error before anything trains, its other types are reported as
unscored with a warning.

The headline score, results.json test[lang] f1/precision/recall, is strict exact-offset entity F1 (micro over
entities; type and every character offset must match; nested and discontinuous gold kept), with bootstrap
intervals over documents (sentences when the set is one document); `word_f1` etc. are seqeval strict IOB2 at word
level. The best epoch is chosen on the headline F1 of the dev languages pooled.

BRAT gold of a test set keeps the offsets its .ann gives, matching the .txt or not (`as_written`): the shared
tasks' scorers score the .ann as written, so the headline equals theirs on the same predicted files. Training and
dev read the repaired spans (`data.offset_mismatch`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medtrain import metrics
from medtrain.config import config_to_dict
from medtrain.data import ner
from medtrain.data.ner.scoring import span_report, span_unit_counts
from medtrain.finetune.cache import FeatureCache
from medtrain.finetune.config import SPLITS, EvalConfig, FinetuneConfig, Source
from medtrain.finetune.labels import scored_types
from medtrain.finetune.task import PRF, Example, Predict, Task, with_languages


@dataclasses.dataclass
class NerPart:
    """One split of one language: its documents, their sentences, and the encoded sentence windows."""

    source: Source
    corpus: ner.NerCorpus
    sentences: list[Any]
    scored: set[str] = dataclasses.field(default_factory=set)
    """The types this part is scored on: its gold types that training has."""
    features: list[Any] = dataclasses.field(default_factory=list)

    @property
    def docs(self) -> list[ner.NerDocument]:
        return self.corpus.documents


def only_types(tags: Sequence[str], types: set[str]) -> list[str]:
    """Tags of other types become O (a whole entity at a time, so the result is still IOB2)."""
    return [t if t == "O" or t[2:] in types else "O" for t in tags]


class NerTask(Task):
    """Token classification; label ids from the training languages' types, so they never shift."""

    unit = "document"

    def read(self, cfg: FinetuneConfig) -> None:
        self.label_config = cfg.labels
        self.parts: dict[str, dict[str, NerPart]] = {}
        for split in SPLITS:
            self.parts[split] = {}
            for lang, source in cfg.data.sources(split).items():
                corpus = ner.read_ner_corpus(source.path, source.format, source.columns, cfg.labels, lang,
                                             source.brat, as_written=split == "test")
                self.parts[split][lang] = NerPart(source, corpus, [s for d in corpus.documents for s in d.sentences])
        self.labels = ner.label_list([p.docs for p in self.parts["train"].values()])
        self.train_types = {label[2:] for label in self.labels if label != "O"}
        for split in ("dev", "test"):
            for lang, part in self.parts[split].items():
                part.scored = scored_types(self.train_types, part.corpus, f"data.{split}.{lang}", part.source)

    def model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def encode(self, tokenizer: Any, max_length: int, cache_dir: Path, tokenizer_dir: Path) -> None:
        label2id = {label: i for i, label in enumerate(self.labels)}
        for split, lang, part in ((split, lang, p) for split, parts in self.parts.items() for lang, p in parts.items()):
            settings = {"task": "ner", "format": part.source.format, "max_length": max_length, "labels": self.labels,
                        "columns": config_to_dict(part.source.columns), "brat": config_to_dict(part.source.brat),
                        "as_written": split == "test",
                        **({"label_config": config_to_dict(self.label_config), "language": lang}
                           if self.label_config is not None else {})}
            cache = FeatureCache(cache_dir, tokenizer_dir, ner, settings)
            data = cache.get(part.source.path, lambda: [dataclasses.asdict(f) for f in
                                                        ner.encode(part.sentences, tokenizer, label2id, max_length)])
            part.features = [ner.Feature(**f) for f in data]

    def train_examples(self) -> list[Example]:
        return [(f.input_ids, f.labels) for p in self.parts["train"].values() for f in p.features]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

    def sizes(self) -> dict[str, dict[str, dict[str, int]]]:
        return {split: {lang: {"documents": len(p.docs), "sentences": len(p.sentences), "sequences": len(p.features)}
                        for lang, p in parts.items()} for split, parts in self.parts.items()}

    def label_space(self) -> dict[str, Any]:
        """results.json `label_space`: the types each language has after the label map, which are scored, and
        what the map and keep changed (counts per type; names only)."""
        return {
            "train": sorted(self.train_types),
            "test": {lang: sorted(p.corpus.types()) for lang, p in self.parts["test"].items()},
            "scored": {lang: sorted(p.scored) for lang, p in self.parts["test"].items()},
            "unscored": {lang: sorted(p.corpus.types() - p.scored) for lang, p in self.parts["test"].items()},
            "dropped": {split: {lang: dict(sorted(p.corpus.dropped.items())) for lang, p in parts.items()}
                        for split, parts in self.parts.items()},
            "unmapped": {split: {lang: dict(sorted(p.corpus.unmapped.items())) for lang, p in parts.items()}
                         for split, parts in self.parts.items()},
            "note": "f1/precision/recall of a test language count its scored types only, gold and predicted",
        }

    def reading(self) -> dict[str, Any]:
        """results.json `reading`: per split and language, the format and what reading skipped or repaired: column
        lines and bare I- tags; BRAT annotations repaired, skipped, or (test gold) kept at offsets as written."""
        return {split: {lang: {"format": p.source.format, "skipped_lines": p.corpus.skipped_lines,
                               "bare_inside": p.corpus.bare_inside,
                               "discontinuous": p.source.columns.discontinuous if p.source.columns else None,
                               "offset_mismatch": p.source.brat.offset_mismatch if p.source.brat else None,
                               "repaired": p.corpus.repaired, "skipped_annotations": p.corpus.skipped_annotations,
                               "as_written": p.corpus.as_written}
                        for lang, p in parts.items()} for split, parts in self.parts.items()}

    def predict(self, predict: Predict, split: str) -> dict[str, list[list[str]]]:
        """IOB2 tags per sentence, per language."""
        id2label = dict(enumerate(self.labels))
        return {lang: ner.decode(part.features, predict([f.input_ids for f in part.features]), id2label,
                                 part.sentences) for lang, part in self.parts[split].items()}

    def score_dev(self, predictions: dict[str, list[list[str]]]) -> dict[str, Any]:
        """Headline (exact-offset) F1 pooled over the dev languages picks the best epoch; word_f1 is logged too."""
        per_language, spans, words = {}, [], []
        for lang, part in self.parts["dev"].items():
            predicted = self._predicted_entities(part, predictions[lang])
            span = metrics.add_counts(*span_unit_counts(part.docs, predicted, part.scored).values())
            word = metrics.add_counts(*self._word_units(part, predictions[lang]).values())
            per_language[lang] = metrics.prf(*metrics.micro_counts(span))
            spans.append(span)
            words.append(word)
        word_scores = metrics.prf(*metrics.micro_counts(metrics.add_counts(*words)))
        pooled = metrics.prf(*metrics.micro_counts(metrics.add_counts(*spans)))
        return with_languages(per_language, {**pooled, **{f"word_{k}": v for k, v in word_scores.items()}})

    def score_test(self, predictions: dict[str, list[list[str]]], dev: dict[str, Any],
                   ev: EvalConfig) -> dict[str, Any]:
        return {lang: self._report(part, predictions[lang], ev) for lang, part in self.parts["test"].items()}

    def write_predictions(self, predictions: dict[str, list[list[str]]], dev: dict[str, Any], folder: Path) -> None:
        """BRAT .ann (and its .txt) per document, every predicted entity; column documents get their synthetic
        text and CoNLL-U documents their `# text` lines, so the offsets line up with the gold entities. A CoNLL-U
        test file is also copied with the predicted tags in its tag's place (predictions/<lang>/<file name>),
        for the user's own scorer."""
        for lang, part in self.parts["test"].items():
            predicted = self._predicted_entities(part, predictions[lang])
            for doc in part.docs:
                ner.write_brat(doc, predicted[doc.doc_id], folder / lang / f"{doc.doc_id}.ann")
            if part.source.format == "conllu" and part.source.path.is_file():
                ner.write_conllu_predictions(part.source.path, part.source.columns, predictions[lang],
                                             folder / lang / part.source.path.name)

    def _word_units(self, part: NerPart, tags: list[list[str]]) -> dict[str, metrics.Counts]:
        """seqeval counts per unit, on the same scored types."""
        return metrics.unit_counts([s.doc_id for s in part.sentences],
                                   [only_types(s.tags, part.scored) for s in part.sentences],
                                   [only_types(t, part.scored) for t in tags])

    def _report(self, part: NerPart, tags: list[list[str]], ev: EvalConfig) -> dict[str, Any]:
        report = span_report(part.docs, self._predicted_entities(part, tags), part.scored, ev.bootstrap,
                             ev.bootstrap_seed, ev.alpha)
        units = self._word_units(part, tags)
        rows = np.array([metrics.micro_counts(c) for c in units.values()], dtype=float).reshape(-1, 3)
        micro = metrics.entity_scores(metrics.add_counts(*units.values()))["micro"]
        report.update({f"word_{name}": metrics.with_interval(micro[name], rows, metrics.micro_metric(name),
                                                             ev.bootstrap, ev.bootstrap_seed, ev.alpha)
                       for name in PRF})
        report.update(word_metric="seqeval strict IOB2, words",
                      unscored_types=sorted(part.corpus.types() - part.scored))
        return report

    def _predicted_entities(self, part: NerPart, tags: list[list[str]]) -> dict[str, list[ner.Entity]]:
        by_doc: dict[str, list[ner.Entity]] = {d.doc_id: [] for d in part.docs}
        for sentence, sentence_tags in zip(part.sentences, tags):
            by_doc[sentence.doc_id].extend(ner.tags_to_entities(sentence, sentence_tags))
        return by_doc
