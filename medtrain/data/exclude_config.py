"""What `prepare` keeps out of the pretraining text: the `exclude` section (evaluation sources and the rule).

Imports neither numpy nor torch: `PrepareConfig` and the study's config embed it. The index and the rule that
act on it are in `medtrain.data.decontaminate`.

    exclude:
      sources:                          # evaluation data, in any format fine-tuning reads
        - ner/es/test                   # a path: the format from its shape (folder: brat, .conllu, .conll, .jsonl, .csv)
        - {path: ner/ro/test.conllu, format: conllu, columns: {tag: misc:BioNERLabel}}
        - {path: screening/nl/test.jsonl, name: screening-nl-test}
      ngram: 13                         # word n-grams, on lowercased words (punctuation is not a word)
      containment: 0.5                  # drop a document holding >= this share of one evaluation document's n-grams
      by: [patient_id]                  # and one whose record's patient_id is a patient of an evaluation source
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from medtrain.data.ner_format import BratFormat, ColumnFormat

MIN_NGRAM = 4
SourceFormat = Literal["auto", "brat", "conll", "conllu", "jsonl", "csv"]
_SUFFIX_FORMATS = {".conllu": "conllu", ".conll": "conll", ".tsv": "conll", ".txt": "conll", ".jsonl": "jsonl",
                   ".csv": "csv"}


@dataclasses.dataclass
class ExcludeSource:
    """One evaluation set whose text must not be pretrained on."""

    path: Path
    """A BRAT folder, a column or CoNLL-U file (or folder of them), a screening JSONL or CSV file; relative to
    data_root like the corpora."""
    format: SourceFormat = "auto"
    """auto: a folder is BRAT, else by suffix (.conllu; .conll/.tsv/.txt columns; .jsonl; .csv)."""
    name: str | None = None
    """How manifest.json and the report name it; default: the path as written."""
    columns: ColumnFormat | None = None
    """Column and CoNLL-U files, as fine-tuning reads them (CoNLL-U needs columns.tag, e.g. misc:BioNERLabel)."""
    brat: BratFormat | None = None
    """BRAT folders: as fine-tuning reads them (only the .txt text is indexed; annotations are checked)."""

    @property
    def label(self) -> str:
        return self.name or str(self.path)

    def resolved_format(self, path: Path) -> str:
        """The configured format, or the one the path's shape implies; ValueError if it implies none."""
        if self.format != "auto":
            return self.format
        if path.is_dir():
            return "brat"
        if path.suffix.lower() in _SUFFIX_FORMATS:
            return _SUFFIX_FORMATS[path.suffix.lower()]
        raise ValueError(f"cannot tell the format of {self.path} from its name; set format to brat, conll, conllu, "
                         "jsonl or csv")


@dataclasses.dataclass
class ExcludeConfig:
    """Evaluation sources and the rule that drops a pretraining document (see the module docstring)."""

    sources: list[Any]
    """Each a path, or a mapping of ExcludeSource fields (read as such here, so a wrong key is named)."""
    ngram: int = 13
    """Words per n-gram. An evaluation document shorter than this counts as one n-gram of all its words."""
    containment: float = 0.5
    """Share of one evaluation document's distinct n-grams that a pretraining document must hold to be dropped.
    Not "any shared n-gram": clinical text is templated, and unrelated notes share template phrases."""
    by: list[str] = dataclasses.field(default_factory=list)
    """Record fields (jsonl, parquet, saved corpora) naming a patient: a document whose value is a patient of an
    evaluation source (screening files' patient_id) is dropped, whatever its text."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("exclude.sources is empty: list the evaluation data to keep out, or drop exclude")
        self.sources = [_source(value, f"exclude.sources.{i}") for i, value in enumerate(self.sources)]
        if self.ngram < MIN_NGRAM:
            raise ValueError(f"exclude.ngram must be >= {MIN_NGRAM} (shorter n-grams match ordinary phrases), "
                             f"got {self.ngram}")
        if not 0 < self.containment <= 1:
            raise ValueError(f"exclude.containment must be in (0, 1], e.g. 0.5, got {self.containment}")
        if len(set(self.by)) != len(self.by) or not all(isinstance(f, str) and f for f in self.by):
            raise ValueError("exclude.by: distinct field names, e.g. [patient_id]")
        labels = [s.label for s in self.sources]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"exclude.sources: names must be unique; repeated: {', '.join(repeated)} (set name)")


def _source(value: Any, key: str) -> ExcludeSource:
    from medtrain.config import path_or_mapping

    found = path_or_mapping(ExcludeSource, value, key)
    return ExcludeSource(found) if isinstance(found, Path) else found


def exclusion_identity(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """What of a manifest's `exclusion` decides the shard bytes: the rule and each source's name, format and
    content hash (an edited test set re-prepares even at the same path)."""
    if entry is None:
        return None
    return {"rule": entry["rule"], "sources": [[s["name"], s["format"], s["sha256"]] for s in entry["sources"]]}
