"""The real corpora each language's sample NER imitates: their file shapes and their entity type names.

One latent generator writes all three languages (generator.py, ENTITY_TYPES); only the shape and the type names
differ, so the learning problem stays the same while a study must map three type sets to one shared space
(`labels:` of a task) before it can score one language's model on another's test set.

    ro  MoNERo (Romanian biomedical NER): one column file `token<TAB>lemma<TAB>tag<TAB>POS`, blank lines between
        sentences, no -DOCSTART-, no split; types ANAT, CHEM, DISO, PROC. Flat, entities taken whole: the longer
        (characters over all its fragments) first, then the earlier start, the order of ENTITY_TYPES and the
        fewer fragments; an entity overlapping one already taken is dropped (so nested ones are lost). A
        discontinuous entity's later fragment opens with a bare I- after the gap, as MoNERo writes it
        (`discontinuous: join` reads it back as one entity). A small fixed fraction of the O lines outside every
        entity's extent has two columns only (token<TAB>lemma), like MoNERo's few corrupt lines
        (`short_lines: skip`). The lemma is the token lowercased and POS a placeholder (PUNCT, NUM or X): the
        generator knows no morphology. The same sentences and tags also go out as CoNLL-U, the way Universal
        Dependencies publishes MoNERo (ud.py).
    es  PharmaCoNER-style BRAT: a drug is NORMALIZABLES, or NO_NORMALIZABLES for a fixed fifth of the drug terms;
        every drug has a `#` AnnotatorNotes line with a made-up SNOMED-like code (<null> for NO_NORMALIZABLES) and
        about half of the NORMALIZABLES an `N` Reference line. PharmaCoNER itself has chemical and protein types
        only: ENFERMEDAD, SINTOMA, PROCEDIMIENTO and ANATOMIA stand in for CANTEMIST/DisTEMIST-style releases.
        Like PharmaCoNER 2019, whose release has five annotations in one document that start one or two
        characters late, one document (SLIPPED_DOCUMENT) has slips in its .ann (pharmaconer_slips), so the
        reader's `offset_mismatch` policies meet real work; its .conll twin stays clean.
    nl  BRAT with a third type set: Aandoening, Symptoom, Medicatie, Verrichting, Anatomie.

A drug's Spanish type and code are functions of its term (sha256), not draws, so they are the same in every file
and the documents' text is what the generator drew, untouched.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import NamedTuple

from medtrain.data.sample.spans import (
    ENTITY_TYPES, Entity, Phrase, TypeName, brat, brat_line, brat_order, sentence_tokens, surface,
)

TYPE_NAMES: dict[str, dict[str, str]] = {
    "ro": {"DISEASE": "DISO", "SYMPTOM": "DISO", "DRUG": "CHEM", "PROCEDURE": "PROC", "ANATOMY": "ANAT"},
    "es": {"DISEASE": "ENFERMEDAD", "SYMPTOM": "SINTOMA", "DRUG": "NORMALIZABLES", "PROCEDURE": "PROCEDIMIENTO",
           "ANATOMY": "ANATOMIA"},
    "nl": {"DISEASE": "Aandoening", "SYMPTOM": "Symptoom", "DRUG": "Medicatie", "PROCEDURE": "Verrichting",
           "ANATOMY": "Anatomie"},
}
"""Latent type -> the type each language's files write (es drugs: see spanish_type)."""
COLUMN_FILES = {"ro": "monero.tsv"}
"""Languages written as one unsplit column file (ner/<lang>/<file>); the others as BRAT train/dev/test folders."""
NOT_NORMALIZABLE = "NO_NORMALIZABLES"
NOT_NORMALIZABLE_EVERY = 5   # a drug term whose hash is a multiple of this is NO_NORMALIZABLES
SHORT_LINE_RATE = 0.005      # of the eligible O lines of monero.tsv: written with two columns
SLIPPED_DOCUMENT = ("es", "train", 0)  # (language, split, index): es_train_0000.ann has the slips
LATE_SLIPS = 3               # its T lines written one or two characters late
FAR_SLIPS = 1                # its T lines moved where their text is nowhere near
SLIP_WINDOW = 8              # a far slip's text is not within this many characters (BratFormat.repair_window)
_FAR_TRIES = 1000            # random places tried for a far slip before its entity is passed over
_CODE_BASE, _CODE_SPAN = 100_000_000, 900_000_000  # nine-digit made-up codes


class MoneroCount(NamedTuple):
    sentences: int
    entities: int
    discontinuous: int
    short_lines: int


def _term_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _code(term: str) -> int:
    return _CODE_BASE + _term_hash(term) % _CODE_SPAN


def _normalizable(term: str) -> bool:
    return _term_hash(term) % NOT_NORMALIZABLE_EVERY != 0


def spanish_type(label: str, text: str) -> str:
    """PharmaCoNER's drug split by term; the other types by TYPE_NAMES."""
    if label == "DRUG" and not _normalizable(text):
        return NOT_NORMALIZABLE
    return TYPE_NAMES["es"][label]


def type_namer(language: str) -> TypeName:
    """The TypeName of a language's files."""
    if language == "es":
        return spanish_type
    names = TYPE_NAMES[language]
    return lambda label, text: names[label]


def written_types(language: str) -> tuple[str, ...]:
    """Every type a language's files can hold, in ENTITY_TYPES order (for annotation.conf and the README)."""
    names = [TYPE_NAMES[language][label] for label in ENTITY_TYPES]
    if language == "es":
        names.insert(names.index(TYPE_NAMES["es"]["DRUG"]) + 1, NOT_NORMALIZABLE)
    return tuple(dict.fromkeys(names))


# ----------------------------------------------------------------------------- es: PharmaCoNER-style BRAT


def pharmaconer_ann(doc: Phrase) -> str:
    """T lines as `spans.brat` writes them, each drug followed by its `#` note and, for some, an `N` line."""
    lines, notes, references = [], 0, 0
    for number, entity in enumerate(brat_order(doc), 1):
        lines.append(brat_line(doc, number, entity, spanish_type))
        if entity.label != "DRUG":
            continue
        term = surface(doc, entity)
        code = _code(term) if _normalizable(term) else None
        notes += 1
        lines.append(f"#{notes}\tAnnotatorNotes T{number}\t{code or '<null>'}\n")
        if code is not None and code % 2 == 0:
            references += 1
            lines.append(f"N{references}\tReference T{number} SNOMED:{code}\t{term}\n")
    return "".join(lines)


def brat_ann(language: str, doc: Phrase) -> str:
    """The .ann file of a BRAT language (es, nl)."""
    return pharmaconer_ann(doc) if language == "es" else brat(doc, type_namer(language))


class Slip(NamedTuple):
    """One slipped T line: where its text is in the .txt and where the line says it is."""

    t_id: str
    start: int      # where the annotation is in the .txt
    written: int    # the start its T line gives
    surface: str


def _at(text: str, start: int, surface: str) -> bool:
    """The annotated text is at `start`, compared as the reader does (whitespace-insensitive)."""
    return 0 <= start and text[start:start + len(surface)].split() == surface.split()


def _late(text: str, start: int, shift: int, surface: str) -> bool:
    """Written `shift` late, the text is wrong there and the true start is the nearest place it occurs, so a
    repair that takes the nearest match restores exactly it; the moved span stays on its line."""
    written, end = start + shift, start + shift + len(surface)
    return (end <= len(text) and "\n" not in text[written:end]
            and not any(_at(text, p, surface) for p in range(written - shift, written + shift + 1) if p != start))


def _far(text: str, written: int, surface: str) -> bool:
    """Nowhere within SLIP_WINDOW characters of `written`: no repair can find it."""
    return ("\n" not in text[written:written + len(surface)]
            and not any(_at(text, p, surface) for p in range(written - SLIP_WINDOW, written + SLIP_WINDOW + 1)))


def pharmaconer_slips(ann: str, text: str, rng: random.Random) -> tuple[str, list[Slip]]:
    """`ann` with LATE_SLIPS T lines written one or two characters late and FAR_SLIPS moved far away, each one's
    surface text as it was; offsets stay inside the text, start < end. Only contiguous entities slip (as in
    PharmaCoNER); a document with too few that qualify gets fewer slips."""
    lines = ann.splitlines(keepends=True)
    single = [i for i, line in enumerate(lines) if line.startswith("T") and ";" not in line.split("\t")[1]]
    rng.shuffle(single)
    slips: list[Slip] = []
    late = far = 0
    for i in single:
        t_id, middle, surface = lines[i].rstrip("\n").split("\t")
        label, start_text, _ = middle.split(" ")
        start, written = int(start_text), None
        if late < LATE_SLIPS:
            shift = 1 + late % 2  # one late by one character, the next by two, ...
            if _late(text, start, shift, surface):
                written, late = start + shift, late + 1
        elif far < FAR_SLIPS:
            tries = (rng.randrange(len(text) - len(surface) + 1) for _ in range(_FAR_TRIES))
            written = next((w for w in tries if abs(w - start) > 4 * SLIP_WINDOW and _far(text, w, surface)), None)
            far += written is not None
        else:
            break
        if written is not None:
            lines[i] = f"{t_id}\t{label} {written} {written + len(surface)}\t{surface}\n"
            slips.append(Slip(t_id, start, written, surface))
    return "".join(lines), sorted(slips, key=lambda s: int(s.t_id[1:]))


# ----------------------------------------------------------------------------- ro: MoNERo-style columns


def _whole_entities(entities: tuple[Entity, ...]) -> list[Entity]:
    """The flat policy of the module docstring: whole entities, longer first, no two overlapping."""
    ranked = sorted(entities, key=lambda e: (-sum(end - start for start, end in e.fragments), e.fragments[0][0],
                                             ENTITY_TYPES.index(e.label), len(e.fragments)))
    kept: list[Entity] = []
    taken: list[tuple[int, int]] = []
    for entity in ranked:
        if all(end <= s or start >= e for start, end in entity.fragments for s, e in taken):
            kept.append(entity)
            taken.extend(entity.fragments)
    return kept


class MoneroTags(NamedTuple):
    """What monero.tsv and monero.conllu write of a document, so both carry the same tags."""

    tags: dict[int, str]     # character -> tag of the token starting there
    extent: set[int]         # characters from an entity's first start to its last end
    kept: list[Entity]       # the entities written (the flat policy)


def monero_tags(doc: Phrase) -> MoneroTags:
    """Each token's tag under the flat policy; monero.tsv and monero.conllu both write these."""
    tags: dict[int, str] = {}
    extent: set[int] = set()
    kept = _whole_entities(doc.entities)
    for entity in kept:
        name = TYPE_NAMES["ro"][entity.label]
        for k, (start, end) in enumerate(entity.fragments):
            tags.update((i, f"I-{name}") for i in range(start, end))
            tags[start] = f"{'I' if k else 'B'}-{name}"  # a later fragment: a bare I- after the gap
        extent.update(range(entity.fragments[0][0], entity.fragments[-1][1]))
    return MoneroTags(tags, extent, kept)


def placeholder_pos(token: str) -> str:
    """MoNERo's POS column (and CoNLL-U's UPOS): the generator knows no morphology, only numbers and punctuation."""
    return "NUM" if token.isdigit() else "X" if re.fullmatch(r"\w+", token) else "PUNCT"


def monero(doc: Phrase, short_rng: random.Random) -> tuple[str, MoneroCount]:
    """A document's sentences in MoNERo's columns (no document marker); `short_rng` picks the two-column lines."""
    tags, extent, kept = monero_tags(doc)
    out, sentences, short = [], 0, 0
    for tokens in sentence_tokens(doc.text):
        for token in tokens:
            word, tag = token.group(), tags.get(token.start(), "O")
            if tag == "O" and token.start() not in extent and short_rng.random() < SHORT_LINE_RATE:
                out.append(f"{word}\t{word.lower()}\n")
                short += 1
            else:
                out.append(f"{word}\t{word.lower()}\t{tag}\t{placeholder_pos(word)}\n")
        out.append("\n")
        sentences += 1
    return "".join(out), MoneroCount(sentences, len(kept), sum(len(e.fragments) > 1 for e in kept), short)
