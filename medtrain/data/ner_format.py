"""How an NER corpus is laid out and which label space it is read into: plain dataclasses for configs.

Imports neither numpy nor torch: `medtrain.finetune.config` (and the study config) embed these, and configs must
stay cheap to load. The readers that act on them are in `medtrain.data.ner`.

    ColumnFormat  column (conll) and CoNLL-U files: where the token and the tag are, and the reading policies
    BratFormat    BRAT folders: what to do with an annotation whose offsets do not match its .txt
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CONLLU_FIELDS", "BratFormat", "ColumnFormat", "LabelConfig", "conllu_tag_place", "label_overlap"]

CONLLU_FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
"""The ten CoNLL-U fields, in order, by the names the `conllu` package gives them."""


@dataclass
class ColumnFormat:
    """How a column ("conll") or CoNLL-U file is laid out: one token per line, blank lines between sentences."""

    token: int = 0
    """Column index of the token (column files; CoNLL-U's token is always FORM)."""
    tag: int | str = -1
    """Column files: column index of the BIO tag; -1: the last column (MoNERo's `token lemma tag POS` needs 2).
    CoNLL-U: `misc:KEY` (a key inside MISC, e.g. misc:BioNERLabel; absent or `_` = O) or a field name (xpos)."""
    separator: Literal["tab", "space"] | None = None
    """Between columns: one tab, or one space; omitted: any run of whitespace."""
    document_marker: str | None = "-DOCSTART-"
    """A line whose first column equals it starts a new document. None: no markers; a file is one document and a
    folder of column files reads one document per file."""
    short_lines: Literal["error", "skip"] = "error"
    """A line with too few columns for `token` and `tag`: an error naming file:line, or skipped and counted."""
    discontinuous: Literal["join", "split"] = "split"
    """A bare I-X after a gap (O or other tokens) following an X entity of the same sentence: join = a further
    fragment of that entity (MoNERo's discontinuous entities); split = a new entity (plain IOB2 repair)."""

    def __post_init__(self) -> None:
        if not _is_int(self.token) or self.token < 0:
            raise ValueError("columns.token must be a column index >= 0")
        if isinstance(self.tag, str):
            conllu_tag_place(self.tag)
        elif not _is_int(self.tag) or self.tag < -1:
            raise ValueError("columns.tag must be a column index >= 0, or -1 for the last column")
        if self.tag == self.token:
            raise ValueError("columns.tag and columns.token name the same column")
        if self.separator not in (None, "tab", "space"):
            raise ValueError("columns.separator must be 'tab' or 'space', or omitted for any whitespace")
        if self.document_marker is not None and (not isinstance(self.document_marker, str)
                                                 or not self.document_marker or self.document_marker.split() !=
                                                 [self.document_marker]):
            raise ValueError("columns.document_marker must be one word such as -DOCSTART-, or null for none")
        if self.short_lines not in ("error", "skip"):
            raise ValueError("columns.short_lines must be 'error' or 'skip'")
        if self.discontinuous not in ("join", "split"):
            raise ValueError("columns.discontinuous must be 'join' or 'split'")

    def min_columns(self) -> int:
        """The fewest columns a token line needs: both indices must exist, and a last-column tag needs 2."""
        if not isinstance(self.tag, int):
            raise ValueError("columns.tag names a CoNLL-U field; column files need a column index")
        return max(self.token, self.tag if self.tag >= 0 else 1) + 1


def conllu_tag_place(tag: object) -> tuple[str, str | None]:
    """`misc:KEY` -> ("misc", KEY); a field name -> (field, None); anything else is a ValueError naming the fix."""
    if isinstance(tag, str):
        field_name, colon, key = tag.partition(":")
        if colon and field_name.lower() == "misc" and key and key.split() == [key] and "=" not in key \
                and "|" not in key:
            return "misc", key
        if not colon and tag.lower() in CONLLU_FIELDS and tag.lower() not in ("id", "form"):
            return tag.lower(), None
    raise ValueError(f"columns.tag for CoNLL-U must be misc:KEY (a key inside MISC, e.g. misc:BioNERLabel) or one "
                     f"of the fields {', '.join(f for f in CONLLU_FIELDS if f not in ('id', 'form'))}")


@dataclass
class BratFormat:
    """How a BRAT folder is read where an annotation's text is not at its offsets in the .txt (a slip of the
    release: PharmaCoNER 2019 has five, all in one document, one or two characters late)."""

    offset_mismatch: Literal["repair", "skip", "error"] = "repair"
    """repair: use the nearest place within `repair_window` characters where the annotated text is, and skip
    the annotation if there is none; skip: drop every mismatched annotation; error: stop at its file:line.
    Test gold is always scored with the offsets as written, as the shared tasks' scorers do."""
    repair_window: int = 8
    """How many characters before or after the written start `repair` looks for the annotated text."""

    def __post_init__(self) -> None:
        if self.offset_mismatch not in ("repair", "skip", "error"):
            raise ValueError("offset_mismatch must be repair, skip or error")
        if not _is_int(self.repair_window) or self.repair_window < 1:
            raise ValueError("repair_window must be a number of characters >= 1")


@dataclass
class LabelConfig:
    """`labels:` of a fine-tuning config or study task: one shared label space over languages.

    Applied as documents are read: types are renamed by `map[language]`, then types outside `keep` are dropped,
    then the IOB2 tags are derived again from the entities that remain.
    """

    map: dict[str, dict[str, str]] = field(default_factory=dict)
    """language -> {source type: shared type}; a type missing from its language's map keeps its name."""
    keep: list[str] | None = None
    """Shared types kept; every other type is dropped (and counted per type). None: keep all."""
    strict: bool = False
    """An entity type with no entry in map[language] (for a language the map has) is an error naming where."""

    def __post_init__(self) -> None:
        if not isinstance(self.map, Mapping):
            raise ValueError("labels.map must map each language to {source type: shared type}")
        for lang, types in self.map.items():
            if not isinstance(types, Mapping) or not types:
                raise ValueError(f"labels.map.{lang} must be a non-empty mapping {{source type: shared type}}")
            for source, shared in types.items():
                if not _is_type_name(source) or not _is_type_name(shared):
                    raise ValueError(f"labels.map.{lang}: entity types must be non-empty names without spaces")
        if self.keep is not None:
            if not self.keep:
                raise ValueError("labels.keep is empty, which would drop every entity; omit it to keep all types")
            if not all(_is_type_name(t) for t in self.keep):
                raise ValueError("labels.keep: entity types must be non-empty names without spaces")
        if not isinstance(self.strict, bool):
            raise ValueError("labels.strict must be true or false")

    def rename(self, language: str) -> Mapping[str, str]:
        """The {source type: shared type} of one language (empty when the map does not name it)."""
        return self.map.get(language, {})


def label_overlap(train_types: set[str], test_types: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """Per test language, its entity types that no training language has (sorted): those cannot be scored.

    The caller decides: every type of a language unscored is an error, some of them a warning.
    """
    return {lang: sorted(types - train_types) for lang, types in test_types.items()}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_type_name(value: object) -> bool:
    """A type becomes a tag suffix (B-TYPE), so it must be one non-empty word."""
    return isinstance(value, str) and len(value.split()) == 1 and value == value.strip()
