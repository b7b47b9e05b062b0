"""The generator's word lists and sentence templates, read from the package data in vocabulary/*.json.

They are data, not code: one JSON file per language (entity terms, screening cues, templates of each genre)
and common.json (number slots and words shared by the languages), so a new language or template is an edit
to a data file. All were written for medtrain; no text comes from real notes. Numbers use the decimal comma
of all three languages; Romanian uses the comma-below letters ș ț (U+0219, U+021B), never the cedilla forms.
Template slots are `{name}`: an ENTITY_TYPE, a word list of the language or of common.json, or a number slot
of common.json ([low, high, decimals]); a trailing digit asks for a second, independent draw (`{team2}`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

LANGUAGES = ("nl", "ro", "es")


@dataclass(frozen=True)
class Compound:
    """Entities written "head site" whose site is a nested ANATOMY span, e.g. "carcinoom van de" + "long"."""

    heads: tuple[str, ...]
    sites: tuple[str, ...]


Sections = tuple[tuple[str, tuple[str, ...]], ...]
"""(header or title, its sentence templates), in document order."""


@dataclass(frozen=True)
class Language:
    """Everything one language needs: entity words, plain slot words and the templates of each genre."""

    terms: Mapping[str, tuple[str, ...]]            # plain entity terms by type
    cue_terms: Mapping[str, tuple[str, ...]]        # the screening target's terms (also plain terms)
    compounds: Mapping[str, tuple[Compound, ...]]   # by type
    coordinator: str                                # joins a second site to a compound: " en de "
    words: Mapping[str, tuple[str, ...]]            # non-entity slots: frequencies, wards, cities, ...
    clinical_titles: tuple[str, ...]
    clinical_sections: Sections
    cues: tuple[str, ...]                           # sentences pointing at the screening target
    decoys: tuple[str, ...]                         # negated or explained-away mentions of it
    biomedical_titles: tuple[str, ...]
    biomedical_sections: Sections
    general_topics: Sections                        # (title, sentences): no header lines


def _read(name: str) -> dict[str, Any]:
    """A vocabulary file from the installed package (importlib.resources: also from a wheel or zip)."""
    text = (resources.files(__package__) / "vocabulary" / name).read_text(encoding="utf-8")
    return json.loads(text)


def _tuples(words: Mapping[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {key: tuple(values) for key, values in words.items()}


def _sections(items: list[dict[str, Any]], title: str, body: str) -> Sections:
    return tuple((item[title], tuple(item[body])) for item in items)


def _language(code: str) -> Language:
    data = _read(f"{code}.json")
    return Language(
        terms=_tuples(data["terms"]),
        cue_terms=_tuples(data["cue_terms"]),
        compounds={label: tuple(Compound(tuple(c["heads"]), tuple(c["sites"])) for c in compounds)
                   for label, compounds in data["compounds"].items()},
        coordinator=data["coordinator"],
        words=_tuples(data["words"]),
        clinical_titles=tuple(data["clinical_titles"]),
        clinical_sections=_sections(data["clinical_sections"], "header", "templates"),
        cues=tuple(data["cues"]),
        decoys=tuple(data["decoys"]),
        biomedical_titles=tuple(data["biomedical_titles"]),
        biomedical_sections=_sections(data["biomedical_sections"], "header", "templates"),
        general_topics=_sections(data["general_topics"], "title", "sentences"),
    )


_COMMON = _read("common.json")
NUMBERS: dict[str, tuple[float, float, int]] = {slot: (low, high, decimals)
                                                for slot, (low, high, decimals) in _COMMON["numbers"].items()}
"""Number slot -> (low, high, decimals)."""
COMMON_WORDS: dict[str, tuple[str, ...]] = _tuples(_COMMON["words"])
"""Word slots every language writes the same way (doses, counts, p-values)."""
VOCABULARIES: dict[str, Language] = {code: _language(code) for code in LANGUAGES}
