"""`read_ner`: the one entry point over every NER format, and the label space applied as documents are read."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Literal

from medtrain.data.ner.brat import read_brat
from medtrain.data.ner.columns import read_columns
from medtrain.data.ner.conllu import read_conllu
from medtrain.data.ner.entities import NerCorpus, NerDocument, Sentence, sentence_tags
from medtrain.data.ner_format import BratFormat, ColumnFormat, LabelConfig
from medtrain.errors import UserError

FORMATS = ("brat", "conll", "conllu")
Format = Literal["brat", "conll", "conllu"]


def read_ner(path: str | Path, format: Format, columns: ColumnFormat | None = None,
             brat: BratFormat | None = None) -> list[NerDocument]:
    """The documents of a BRAT folder, a column file (or folder of them) or a CoNLL-U file (or folder)."""
    return read_ner_corpus(path, format, columns, brat=brat).documents


def read_ner_corpus(path: str | Path, format: Format, columns: ColumnFormat | None = None,
                    labels: LabelConfig | None = None, language: str | None = None,
                    brat: BratFormat | None = None, as_written: bool = False) -> NerCorpus:
    """`read_ner` with its counts; with `labels`, in the label space of `language` (`apply_labels`).

    `columns` applies to column and CoNLL-U files (default: `ColumnFormat()`, token first and tag last; CoNLL-U
    needs its `tag`), `brat` to BRAT folders (default: `BratFormat()`, repair). `as_written`: BRAT entities keep
    the offsets their .ann gives, matching the .txt or not: test gold, scored as the shared tasks score it.
    """
    path = Path(path)
    if format == "conll":
        corpus = read_columns(path, columns or ColumnFormat())
    elif format == "conllu":
        corpus = read_conllu(path, columns or ColumnFormat())
    elif format == "brat":
        corpus = read_brat(path, brat or BratFormat(), as_written)
    else:
        raise UserError(f"unknown NER format {format!r}; use {', '.join(FORMATS)}")
    return corpus if labels is None else apply_labels(corpus, labels, language)


def apply_labels(corpus: NerCorpus, labels: LabelConfig, language: str | None) -> NerCorpus:
    """Entities renamed by `labels.map[language]`, those outside `labels.keep` dropped (counted per type), and
    every sentence's tags derived again from the entities left.

    Under `labels.strict`, a type the language's map lacks is an error at the file and line of its entity.
    """
    rename = labels.rename(language) if language is not None else {}
    strict = labels.strict and language in labels.map
    keep = None if labels.keep is None else set(labels.keep)
    dropped: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    documents = []
    for doc in corpus.documents:
        entities = []
        for entity in doc.entities:
            shared = rename.get(entity.type)
            if shared is None and rename:
                if strict:
                    raise UserError(f"entity type {entity.type} has no entry in labels.map.{language} "
                                    "(labels.strict is set)", *(entity.source or ()))
                unmapped[entity.type] += 1
            shared = shared or entity.type
            if keep is not None and shared not in keep:
                dropped[shared] += 1
                continue
            entities.append(entity if shared == entity.type else replace(entity, type=shared))
        tags = sentence_tags([s.words for s in doc.sentences], entities)
        sentences = [Sentence(s.doc_id, s.words, t) for s, t in zip(doc.sentences, tags)]
        documents.append(replace(doc, sentences=sentences, entities=entities))
    return replace(corpus, documents=documents, dropped=dropped, unmapped=unmapped)

