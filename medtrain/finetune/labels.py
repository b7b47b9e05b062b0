"""Which entity types a NER run can score: the rule shared by the run (before it trains) and `grid submit`
(before anything is launched). No torch: the grid checks every run's label space in its own process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from medtrain.data import ner
from medtrain.data.ner_format import label_overlap
from medtrain.errors import UserError
from medtrain.finetune.config import SPLITS, FinetuneConfig, Source

log = logging.getLogger(__name__)

ReadCorpus = Callable[[Source, str], ner.NerCorpus]
"""(source, language) -> the corpus as the run reads it (format, columns, labels applied)."""


def trained_types(corpora: Iterable[ner.NerCorpus]) -> set[str]:
    """The types of the run's label ids (ner.label_list of the training tags): a type found only nested inside
    another is never a tag, so the model cannot predict it."""
    return {label[2:] for label in ner.label_list([c.documents for c in corpora]) if label != "O"}


def scored_types(train_types: set[str], corpus: ner.NerCorpus, where: str, source: Source,
                 warn: bool = True) -> set[str]:
    """A dev/test corpus's scored types. None shared with training is an error naming both sets; some shared is
    a warning naming the others (types only, never text), unless warn is off. A corpus with no gold entity
    scores every trained type (its predictions are all spurious)."""
    types = corpus.types()
    if not types:
        return set(train_types)
    unscored = label_overlap(train_types, {where: types})[where]
    if len(unscored) == len(types):
        raise UserError(f"{where}: its entity types ({', '.join(sorted(types))}) share none with the training "
                        f"languages' ({', '.join(sorted(train_types)) or 'none'}); map both to one label space "
                        "with labels.map (and labels.keep)", source.path)
    if unscored and warn:
        log.warning("%s: entity types %s are not among the trained types and are not scored; scored: %s",
                    where, ", ".join(unscored), ", ".join(sorted(types & train_types)))
    return types & train_types


def check_label_space(cfg: FinetuneConfig, read: ReadCorpus) -> None:
    """Every dev and test language of a NER config shares a type with its training languages (scored_types);
    a partial overlap is left to the run to warn about, once, in its own log."""
    train = trained_types(read(source, lang) for lang, source in cfg.data.sources("train").items())
    for split in SPLITS[1:]:
        for lang, source in cfg.data.sources(split).items():
            scored_types(train, read(source, lang), f"data.{split}.{lang}", source, warn=False)
