"""CoNLL-U files (Universal Dependencies), the tag in MISC or a named field: being written in this session."""

from __future__ import annotations

from pathlib import Path

from medtrain.data.ner.entities import NerCorpus
from medtrain.data.ner_format import ColumnFormat


def read_conllu(path: Path, columns: ColumnFormat) -> NerCorpus:
    raise NotImplementedError
