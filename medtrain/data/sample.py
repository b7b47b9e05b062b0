"""The bundled synthetic clinical-style data set: nl / ro / es corpora, NER, screening records, a tokenizer.

Why it exists: the study (further pretraining, then fine-tuning) must run anywhere, offline, on no patient
data. Every text is generated from templates and word lists written for this project; no real note is
copied. The design makes domain adaptation measurable: the clinical corpus is built from the same
templates, entity words and screening cues as the NER and screening text; the biomedical corpus shares the
entity words but not the phrasing; the general corpus (news, weather, sports, cooking) shares almost nothing.
Half of the entity terms never occur in NER training or dev documents, only in the test documents and the
corpora (held_out_terms), so tagging them rewards a model that learned the domain's words in pretraining.

Layout written by `write_sample_data(out, seed, scale)`:
    corpora/<domain>_<lang>.jsonl       {"text", "language", "domain"} per line
    ner/<lang>/<split>/<doc>.txt|.ann   BRAT standoff, one sentence per line, offsets in characters
    ner/<lang>/<split>.conll            the same documents in IOB2, in sorted document-name order
    screening/<lang>/<split>.jsonl      {"patient_id", "note_id", "text", "label"}, label per patient
    tokenizer/                          WordPiece built from the corpora (AutoTokenizer.from_pretrained)
    prepare.yaml, README.md             a ready `medtrain prepare` config; what each folder holds

CoNLL policy for nested and discontinuous BRAT entities (the one rule every .conll file follows):
    1. a discontinuous entity becomes one contiguous entity per fragment, each with the entity's type;
    2. overlaps are resolved greedily: the longer span wins; at equal length a whole entity beats a
       fragment, then the earlier start wins, then the order of ENTITY_TYPES; a losing span is dropped.
    So "carcinoom van de long en de lever" (DISEASE "carcinoom van de long", DISEASE "carcinoom van de
    ... lever", ANATOMY "long", ANATOMY "lever") becomes DISEASE "carcinoom van de long" + ANATOMY "lever".
CoNLL tokens are runs of word characters or single other characters (TOKEN_PATTERN) within one line of the
.txt, so each maps back to its character offsets; every entity starts and ends on a token boundary.
Each document opens with a `-DOCSTART-<TAB>O` line; sentences are separated by blank lines.

Screening target: heart failure. A positive patient's notes carry several of its symptoms, findings and
drugs scattered among ordinary sentences; negatives carry negated or explained-away mentions and the odd
stray cue, so no single word separates the classes.

Determinism: each file has its own `random.Random`, seeded by sha256 of (seed, file); no global random
state, no clocks. The same seed gives byte-identical files, tokenizer included (its vocabulary is chosen by
count, ties broken by the word: tokenizer.train_wordpiece), except prepare.yaml, which holds the OUT path.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml
from tqdm import tqdm

from medtrain.data.tokenizer import train_wordpiece
from medtrain.errors import UserError
from medtrain.io import atomic_open, write_text_atomic

__all__ = ["DOMAINS", "ENTITY_TYPES", "LANGUAGES", "SPLITS", "TOKEN_PATTERN", "write_sample_data"]

LANGUAGES = ("nl", "ro", "es")
DOMAINS = ("clinical", "biomedical", "general")
SPLITS = ("train", "dev", "test")
ENTITY_TYPES = ("DISEASE", "DRUG", "PROCEDURE", "SYMPTOM", "ANATOMY")
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

# Sizes at scale 1.0 (about 5 s on one core, tokenizer included); `scale` multiplies every count.
CORPUS_DOCS = 300          # per corpus; 9 corpora of mixed lengths, about 540k words in all
NER_DOCS = 60              # per language, split 60/20/20
PATIENTS = 100             # per language, split 60/20/20, each with 2-5 notes
HELDOUT_FRACTION = 0.2     # dev and test each
POSITIVE_RATE = 0.15       # screening positives per split (at least one)
HELD_OUT = 2               # every HELD_OUT-th entity term of a type is in NER test documents only (held_out_terms)
VOCAB_SIZE = 8000          # the templates' vocabulary is finite, so this does not grow with scale
LONG_NOTE_WORDS = 400      # about 512 wordpieces: screening notes above this need chunking
_PROGRESS_FROM_SCALE = 5.0  # smaller runs take seconds and show no progress bar

_COMPOUND_RATE = {"DISEASE": 0.3, "SYMPTOM": 0.2, "PROCEDURE": 0.35}  # "head site" with a nested ANATOMY
_COORDINATION_RATE = 0.15  # of compounds: "head site1 en de site2" -> a discontinuous second entity
_POSITIVE_CUE_BIAS = 0.15  # how often a positive patient's entity slot names a target-condition term
_SLOT = re.compile(r"\{(\w+?)\d?\}")  # a trailing digit asks for a second, independent draw: {team2}


# ----------------------------------------------------------------------------- text with standoff spans


@dataclass(frozen=True)
class Entity:
    """A BRAT entity: a type and one or more (start, end) character fragments, end exclusive."""

    label: str
    fragments: tuple[tuple[int, int], ...]

    def shifted(self, by: int) -> Entity:
        return Entity(self.label, tuple((s + by, e + by) for s, e in self.fragments))


@dataclass(frozen=True)
class Phrase:
    """Text and the entities in it, offsets relative to the text, so phrases compose by concatenation."""

    text: str
    entities: tuple[Entity, ...] = ()


def _join(parts: Sequence[Phrase], sep: str = "") -> Phrase:
    """Concatenate phrases, moving each one's entities to where its text lands."""
    texts, entities, offset = [], [], 0
    for i, part in enumerate(parts):
        if i:
            texts.append(sep)
            offset += len(sep)
        texts.append(part.text)
        if part.entities:
            entities.extend(entity.shifted(offset) for entity in part.entities)
        offset += len(part.text)
    return Phrase("".join(texts), tuple(entities))


# ----------------------------------------------------------------------------- languages and slot filling


@dataclass(frozen=True)
class _Compound:
    """Entities written "head site" whose site is a nested ANATOMY span, e.g. "carcinoom van de" + "long"."""

    heads: tuple[str, ...]
    sites: tuple[str, ...]


@dataclass(frozen=True)
class _Language:
    """Everything one language needs: entity words, plain slot words and the templates of each genre."""

    terms: Mapping[str, tuple[str, ...]]            # plain entity terms by type
    cue_terms: Mapping[str, tuple[str, ...]]        # the screening target's terms (also plain terms)
    compounds: Mapping[str, tuple[_Compound, ...]]  # by type
    coordinator: str                                # joins a second site to a compound: " en de "
    words: Mapping[str, tuple[str, ...]]            # non-entity slots: frequencies, wards, cities, ...
    clinical_titles: tuple[str, ...]
    clinical_sections: tuple[tuple[str, tuple[str, ...]], ...]
    cues: tuple[str, ...]                           # sentences pointing at the screening target
    decoys: tuple[str, ...]                         # negated or explained-away mentions of it
    biomedical_titles: tuple[str, ...]
    biomedical_sections: tuple[tuple[str, tuple[str, ...]], ...]
    general_topics: tuple[tuple[str, tuple[str, ...]], ...]  # (title, sentences): no header lines


@dataclass
class _Filler:
    """Fills template slots for one language; `cue_rate` tilts entity slots toward the screening target."""

    lang: _Language
    rng: random.Random
    cue_rate: float = 0.0
    exclude: frozenset[str] = frozenset()  # terms this text may not use (held out of NER training)
    used: set[str] = field(default_factory=set)  # terms already in this sentence: no "X, Y and X"

    def new_sentence(self) -> None:
        self.used.clear()

    def __call__(self, slot: str) -> Phrase:
        if slot in ENTITY_TYPES:
            return self._entity(slot)
        words = self.lang.words.get(slot) or _COMMON_WORDS.get(slot)
        if words:
            return Phrase(self.rng.choice(words))
        low, high, decimals = _NUMBERS[slot]
        if decimals == 0:
            return Phrase(str(self.rng.randint(low, high)))
        return Phrase(f"{self.rng.uniform(low, high):.{decimals}f}".replace(".", ","))  # decimal comma

    def _entity(self, label: str) -> Phrase:
        compounds = self.lang.compounds.get(label, ())
        if compounds and self.rng.random() < _COMPOUND_RATE[label]:
            return _compound(self.rng, label, self.rng.choice(compounds), self.lang.coordinator)
        cues = self.lang.cue_terms.get(label, ())
        pool = cues if cues and self.rng.random() < self.cue_rate else self.lang.terms[label] + cues
        pool = [term for term in pool if term not in self.exclude] or pool
        text = self.rng.choice([term for term in pool if term not in self.used] or pool)
        self.used.add(text)
        return Phrase(text, (Entity(label, ((0, len(text)),)),))


def _render(template: str, fill: _Filler) -> Phrase:
    """Fill every {slot} of a template into one sentence, its first letter capitalised."""
    fill.new_sentence()
    parts, pos = [], 0
    for match in _SLOT.finditer(template):
        parts += [Phrase(template[pos:match.start()]), fill(match.group(1))]
        pos = match.end()
    parts.append(Phrase(template[pos:]))
    sentence = _join(parts)
    return Phrase(sentence.text[:1].upper() + sentence.text[1:], sentence.entities)


def _compound(rng: random.Random, label: str, compound: _Compound, coordinator: str) -> Phrase:
    """"head site" (nested ANATOMY), or "head site1 <coordinator> site2", which adds a discontinuous entity."""
    head = rng.choice(compound.heads)
    if rng.random() >= _COORDINATION_RATE:
        site = rng.choice(compound.sites)
        text, start = f"{head} {site}", len(head) + 1
        return Phrase(text, (Entity(label, ((0, len(text)),)), Entity("ANATOMY", ((start, len(text)),))))
    first, second = rng.sample(compound.sites, 2)
    text = f"{head} {first}{coordinator}{second}"
    a, b = len(head) + 1, len(head) + 1 + len(first)
    c, d = b + len(coordinator), len(text)
    return Phrase(text, (Entity(label, ((0, b),)), Entity("ANATOMY", ((a, b),)),
                         Entity(label, ((0, len(head)), (c, d))), Entity("ANATOMY", ((c, d),))))


# ----------------------------------------------------------------------------- documents


def _sectioned(rng: random.Random, fill: _Filler, titles: Sequence[str],
               sections: Sequence[tuple[str, Sequence[str]]], n: int) -> list[Phrase]:
    """A title line, then `n` sentence lines spread over the sections in order, each opened by its header.

    A section deals its templates like a shuffled deck, so a sentence repeats only after all others were used.
    """
    lines = [_render(rng.choice(titles), fill)]
    decks: list[list[str]] = [[] for _ in sections]
    for i in range(n):
        k = i * len(sections) // n
        header, templates = sections[k]
        if header and (i == 0 or k != (i - 1) * len(sections) // n):
            lines.append(Phrase(header))
        if not decks[k]:
            decks[k] = rng.sample(templates, len(templates))
        lines.append(_render(decks[k].pop(), fill))
    return lines


def _scatter(lines: list[Phrase], templates: Sequence[str], rng: random.Random, fill: _Filler) -> None:
    """Insert sentences at random places after the title, so cues are spread through a note."""
    for template in templates:
        lines.insert(rng.randint(1, len(lines)), _render(template, fill))


def _doc_length(rng: random.Random) -> int:
    """Sentences in a corpus document: 40% short notes, 40% medium, 20% long (several hundred words)."""
    r = rng.random()
    if r < 0.4:
        return rng.randint(3, 8)
    return rng.randint(10, 25) if r < 0.8 else rng.randint(30, 60)


def _clinical_doc(lang: _Language, rng: random.Random) -> str:
    """A discharge letter or progress note; some carry a screening cue or decoy, as real notes would."""
    fill = _Filler(lang, rng)
    lines = _sectioned(rng, fill, lang.clinical_titles, lang.clinical_sections, _doc_length(rng))
    extras = [rng.choice(pool) for pool, p in ((lang.cues, 0.3), (lang.decoys, 0.2)) if rng.random() < p]
    _scatter(lines, extras, rng, fill)
    return "\n".join(line.text for line in lines)


def _biomedical_doc(lang: _Language, rng: random.Random) -> str:
    """A literature-style abstract: the entity words of the clinical text, in scientific phrasing."""
    fill = _Filler(lang, rng)
    lines = _sectioned(rng, fill, lang.biomedical_titles, lang.biomedical_sections, _doc_length(rng))
    return "\n".join(line.text for line in lines)


def _general_doc(lang: _Language, rng: random.Random) -> str:
    """A news, weather, sports or cooking text with no medical vocabulary."""
    title, sentences = rng.choice(lang.general_topics)
    lines = _sectioned(rng, _Filler(lang, rng), (title,), (("", sentences),), _doc_length(rng))
    return "\n".join(line.text for line in lines)


_DOCUMENT_MAKERS: dict[str, Callable[[_Language, random.Random], str]] = {
    "clinical": _clinical_doc, "biomedical": _biomedical_doc, "general": _general_doc,
}


def held_out_terms(lang: _Language) -> frozenset[str]:
    """Every HELD_OUT-th plain entity term of each type: absent from NER training and dev documents, present in
    the NER test documents and in the corpora, as rare clinical words are seen in unlabelled notes but not in a
    small annotated set. Tagging them takes knowing the domain's words: what domain pretraining should bring."""
    sites = {site for compounds in lang.compounds.values() for compound in compounds for site in compound.sites}
    return frozenset(term for terms in lang.terms.values() for term in terms[HELD_OUT - 1::HELD_OUT]
                     if term not in sites)  # a compound's site is also annotated, as ANATOMY


def _ner_doc(lang: _Language, rng: random.Random, exclude: frozenset[str]) -> Phrase:
    """A clinical note with every entity annotated; one sentence per line, ending in a newline."""
    fill = _Filler(lang, rng, exclude=exclude)
    lines = _sectioned(rng, fill, lang.clinical_titles, lang.clinical_sections, rng.randint(6, 20))
    doc = _join(lines, "\n")
    return Phrase(doc.text + "\n", doc.entities)


def _note_cues(lang: _Language, rng: random.Random, positive: bool) -> list[str]:
    """Cue sentences for one note: several in most positive notes; decoys and a stray cue in negatives."""
    if positive:
        n_cues = rng.randint(0, 1) if rng.random() < 0.2 else rng.randint(2, 6)
        n_decoys = int(rng.random() < 0.2)
    else:
        n_cues = int(rng.random() < 0.25)
        n_decoys = rng.choice((0, 0, 1, 1, 2))
    return rng.sample(lang.cues, n_cues) + rng.sample(lang.decoys, n_decoys)


def _screening_note(lang: _Language, rng: random.Random, positive: bool) -> str:
    """A long clinical note; a positive patient's notes lean toward the target condition's terms and cues."""
    fill = _Filler(lang, rng, _POSITIVE_CUE_BIAS if positive else 0.0)
    lines = _sectioned(rng, fill, lang.clinical_titles, lang.clinical_sections, rng.randint(20, 70))
    _scatter(lines, _note_cues(lang, rng, positive), rng, fill)
    return "\n".join(line.text for line in lines)


# ----------------------------------------------------------------------------- BRAT and CoNLL


def _brat(doc: Phrase) -> str:
    """The .ann file: `T<n>\\tTYPE start end[;start end]\\ttext`, fragments' texts joined by a space."""
    order = sorted(doc.entities, key=lambda e: (e.fragments[0][0], -e.fragments[-1][1], ENTITY_TYPES.index(e.label)))
    lines = []
    for i, entity in enumerate(order, 1):
        offsets = ";".join(f"{s} {e}" for s, e in entity.fragments)
        surface = " ".join(doc.text[s:e] for s, e in entity.fragments)
        lines.append(f"T{i}\t{entity.label} {offsets}\t{surface}\n")
    return "".join(lines)


def _conll_spans(entities: Sequence[Entity]) -> list[tuple[int, int, str]]:
    """Flat, non-overlapping (start, end, type) spans under the CoNLL policy of the module docstring."""
    candidates = [(s, e, entity.label, len(entity.fragments) > 1) for entity in entities for s, e in entity.fragments]
    candidates.sort(key=lambda c: (c[0] - c[1], c[3], c[0], ENTITY_TYPES.index(c[2])))
    kept: list[tuple[int, int, str]] = []
    for start, end, label, _ in candidates:
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, label))
    return sorted(kept)


def _conll(doc: Phrase) -> str:
    """One document in IOB2: `-DOCSTART-`, then token<TAB>tag lines, a blank line after each sentence."""
    owner: dict[int, tuple[int, str]] = {}
    for start, end, label in _conll_spans(doc.entities):
        owner.update((i, (start, label)) for i in range(start, end))
    out = ["-DOCSTART-\tO\n\n"]
    for line in re.finditer(r"[^\n]+", doc.text):
        for token in TOKEN_PATTERN.finditer(doc.text, line.start(), line.end()):
            start, label = owner.get(token.start(), (None, None))
            tag = "O" if label is None else f"{'B' if start == token.start() else 'I'}-{label}"
            out.append(f"{token.group()}\t{tag}\n")
        out.append("\n")
    return "".join(out)


# ----------------------------------------------------------------------------- writers


class CorpusCount(NamedTuple):
    name: str
    documents: int
    words: int


class NerCount(NamedTuple):
    language: str
    split: str
    documents: int
    entities: int


class ScreeningCount(NamedTuple):
    language: str
    split: str
    patients: int
    notes: int
    positives: int
    long_notes: int


def _rng(seed: int, *parts: str) -> random.Random:
    """A generator of its own for each file, so adding one file never changes another."""
    digest = hashlib.sha256("/".join((str(seed), *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _scaled(base: int, scale: float) -> int:
    return max(1, round(base * scale))


def _split_sizes(total: int) -> dict[str, int]:
    """Train/dev/test sizes; each at least 1 so every split file exists."""
    heldout = max(1, round(total * HELDOUT_FRACTION))
    return {"train": max(1, total - 2 * heldout), "dev": heldout, "test": heldout}


def _write_corpus(path: Path, language: str, domain: str, rng: random.Random, n_docs: int) -> CorpusCount:
    make, words = _DOCUMENT_MAKERS[domain], 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for _ in range(n_docs):
            text = make(_LANGUAGES[language], rng)
            words += len(text.split())
            f.write(json.dumps({"text": text, "language": language, "domain": domain}, ensure_ascii=False) + "\n")
    return CorpusCount(f"{domain}_{language}", n_docs, words)


def _write_ner_split(folder: Path, language: str, split: str, rng: random.Random, n_docs: int) -> NerCount:
    """BRAT files in `folder` and the same documents as `folder`.conll; stale BRAT files are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in sorted([*folder.glob("*.txt"), *folder.glob("*.ann")]):
        stale.unlink()
    blocks, entities = [], 0
    lang = _LANGUAGES[language]
    exclude = frozenset() if split == "test" else held_out_terms(lang)
    for i in range(n_docs):
        doc, name = _ner_doc(lang, rng, exclude), f"{language}_{split}_{i:04d}"
        write_text_atomic(folder / f"{name}.txt", doc.text)
        write_text_atomic(folder / f"{name}.ann", _brat(doc))
        blocks.append(_conll(doc))
        entities += len(doc.entities)
    write_text_atomic(folder.with_suffix(".conll"), "".join(blocks))
    return NerCount(language, split, n_docs, entities)


def _write_screening_split(path: Path, language: str, split: str, rng: random.Random, n_patients: int,
                           first_id: int) -> ScreeningCount:
    """Patients with 2-5 notes each; the patient's label is repeated on every note."""
    positives = set(rng.sample(range(n_patients), max(1, round(n_patients * POSITIVE_RATE))))
    notes = long_notes = 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for i in range(n_patients):
            patient_id, label = f"{language}-{first_id + i:05d}", int(i in positives)
            for j in range(rng.randint(2, 5)):
                text = _screening_note(_LANGUAGES[language], rng, bool(label))
                notes, long_notes = notes + 1, long_notes + (len(text.split()) > LONG_NOTE_WORDS)
                record = {"patient_id": patient_id, "note_id": f"{patient_id}-{j + 1}", "text": text, "label": label}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return ScreeningCount(language, split, n_patients, notes, len(positives), long_notes)


def _corpus_texts(out: Path) -> Iterator[str]:
    """Stream the corpora back for tokenizer training, so memory stays flat at any scale."""
    for domain in DOMAINS:
        for language in LANGUAGES:
            with open(out / "corpora" / f"{domain}_{language}.jsonl", encoding="utf-8") as f:
                yield from (json.loads(line)["text"] for line in f)


def _write_tokenizer(out: Path) -> int:
    """Build into a temporary folder, then swap it in, so a kill never leaves a half-written tokenizer.

    Returns the vocabulary size, which stays below VOCAB_SIZE when the corpora have fewer distinct words.
    """
    final, tmp = out / "tokenizer", out / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vocab_size = len(train_wordpiece(_corpus_texts(out), tmp, vocab_size=VOCAB_SIZE))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return vocab_size


def _write_prepare_config(out: Path) -> None:
    """prepare.yaml with paths built from `out` as given: a relative OUT gives paths relative to the same folder."""
    header = {"tokenizer": str(out / "tokenizer"), "seq_len": 128, "output_dir": str(out / "shards"),
              "validation_fraction": 0.05}
    lines = ["# `medtrain prepare` config for the synthetic sample data (written by `medtrain sample-data`)",
             yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip("\n"), "corpora:"]
    for domain in DOMAINS:
        for language in LANGUAGES:
            entry = {"name": f"{domain}_{language}", "path": str(out / "corpora" / f"{domain}_{language}.jsonl"),
                     "language": language, "domain": domain, "weight": 1.0}
            flow = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, allow_unicode=True, width=1 << 16)
            lines.append(f"  - {flow.strip()}")
    write_text_atomic(out / "prepare.yaml", "\n".join(lines) + "\n")


# lets the brat annotation tool open ner/ as a collection
_ANNOTATION_CONF = "[entities]\n" + "".join(f"{t}\n" for t in ENTITY_TYPES) + "[relations]\n[events]\n[attributes]\n"

_README = """\
# Synthetic clinical-style sample data (nl, ro, es)

Everything here is synthetic: generated by `medtrain sample-data` from templates and word lists written for
medtrain. No text comes from real patients or real clinical notes. The same seed gives the same bytes.

- `corpora/<domain>_<lang>.jsonl`: pretraining text, one `{"text", "language", "domain"}` object per line;
  domains `clinical` (discharge letters, progress notes), `biomedical` (abstracts), `general` (news, weather,
  sports, cooking).
- `ner/<lang>/<split>/*.txt|*.ann`: NER in BRAT standoff (DISEASE, DRUG, PROCEDURE, SYMPTOM, ANATOMY), with
  nested and a few discontinuous entities; `ner/<lang>/<split>.conll` holds the same documents in IOB2, with
  discontinuous entities split into fragments and overlaps resolved to the longest span
  (`ner/annotation.conf` lets the brat tool open the folder).
- `screening/<lang>/<split>.jsonl`: `{"patient_id", "note_id", "text", "label"}`, 2-5 notes per patient, the
  patient's label (heart failure, about 15% positive) repeated on each note; many notes exceed 512 wordpieces.
- `tokenizer/`: a WordPiece tokenizer built from the corpora's words (`AutoTokenizer.from_pretrained`).
- `prepare.yaml`: a ready config for `medtrain prepare` listing the nine corpora.
"""


def _summary(out: Path, seed: int, scale: float, corpora: Sequence[CorpusCount], ner: Sequence[NerCount],
             screening: Sequence[ScreeningCount], vocab_size: int) -> str:
    """Counts only, never note text."""
    lines = [f"synthetic nl/ro/es sample data (seed {seed}, scale {scale:g}) in {out}",
             "corpora (documents, whitespace words):"]
    lines += [f"  {c.name:<16} {c.documents:>6} docs {c.words:>10,} words" for c in corpora]
    lines.append(f"  {'total':<16} {sum(c.documents for c in corpora):>6} docs "
                 f"{sum(c.words for c in corpora):>10,} words")
    lines.append("ner (BRAT + IOB2 CoNLL; documents, entities):")
    lines += [f"  {n.language} {n.split:<5} {n.documents:>5} docs {n.entities:>7} entities" for n in ner]
    lines.append(f"screening (patients, notes, positive patients, notes > {LONG_NOTE_WORDS} words):")
    lines += [f"  {s.language} {s.split:<5} {s.patients:>5} patients {s.notes:>6} notes "
              f"{s.positives / s.patients:>6.1%} positive {s.long_notes / s.notes:>6.1%} long" for s in screening]
    lines += [f"tokenizer: WordPiece, {vocab_size} tokens, in {out / 'tokenizer'}",
              f"next: medtrain prepare {out / 'prepare.yaml'}"]
    return "\n".join(lines)


def _write_corpora(out: Path, seed: int, scale: float, bar: tqdm) -> list[CorpusCount]:
    counts = []
    for domain in DOMAINS:
        for language in LANGUAGES:
            path = out / "corpora" / f"{domain}_{language}.jsonl"
            rng = _rng(seed, "corpus", domain, language)
            counts.append(_write_corpus(path, language, domain, rng, _scaled(CORPUS_DOCS, scale)))
            bar.update()
    return counts


def _write_tasks(out: Path, seed: int, scale: float, bar: tqdm) -> tuple[list[NerCount], list[ScreeningCount]]:
    """NER and screening splits; patient ids run on across splits, so no patient is in two splits."""
    ner, screening = [], []
    for language in LANGUAGES:
        ner_sizes, patient_sizes = _split_sizes(_scaled(NER_DOCS, scale)), _split_sizes(_scaled(PATIENTS, scale))
        first_id = 0
        for split in SPLITS:
            ner.append(_write_ner_split(out / "ner" / language / split, language, split,
                                        _rng(seed, "ner", language, split), ner_sizes[split]))
            screening.append(_write_screening_split(out / "screening" / language / f"{split}.jsonl", language, split,
                                                    _rng(seed, "screening", language, split), patient_sizes[split],
                                                    first_id))
            first_id += patient_sizes[split]
            bar.update(2)
    return ner, screening


def write_sample_data(out: Path, seed: int = 0, scale: float = 1.0) -> str:
    """Write the whole synthetic data set under `out` (see the module docstring) and return a summary."""
    if not scale > 0:
        raise UserError(f"--scale must be a positive number, got {scale}")
    out = Path(out)
    steps = len(DOMAINS) * len(LANGUAGES) + 2 * len(LANGUAGES) * len(SPLITS) + 1
    with tqdm(total=steps, desc="sample-data", unit="file", disable=scale < _PROGRESS_FROM_SCALE) as bar:
        corpora = _write_corpora(out, seed, scale, bar)
        ner, screening = _write_tasks(out, seed, scale, bar)
        vocab_size = _write_tokenizer(out)
        bar.update()
    write_text_atomic(out / "ner" / "annotation.conf", _ANNOTATION_CONF)
    _write_prepare_config(out)
    write_text_atomic(out / "README.md", _README)
    return _summary(out, seed, scale, corpora, ner, screening, vocab_size)


# ----------------------------------------------------------------------------- word lists and templates
# Written for medtrain. Numbers use the decimal comma of all three languages. Romanian uses the comma-below
# letters ș ț (U+0219, U+021B), never the cedilla forms.

_NUMBERS: dict[str, tuple[float, float, int]] = {  # slot: (low, high, decimals)
    "age": (20, 95, 0), "days": (2, 14, 0), "weeks": (2, 12, 0), "months": (3, 18, 0), "year": (1985, 2023, 0),
    "year_from": (2000, 2012, 0), "year_to": (2014, 2023, 0), "hospitals": (2, 12, 0),
    "sys": (95, 185, 0), "dia": (50, 105, 0), "hr": (48, 128, 0), "temp": (35.8, 40.1, 1), "sat": (86, 99, 0),
    "hb_mmol": (5.5, 10.5, 1), "hb_gdl": (8.5, 16.5, 1), "crp": (1, 250, 0), "creat_umol": (50, 400, 0),
    "creat_mgdl": (0.6, 4.5, 1), "pct": (3, 68, 0), "ratio": (0.35, 0.95, 2), "bnp": (450, 9500, 0),
    "ef": (15, 40, 0), "kg": (2, 6, 0), "goals": (0, 5, 0), "minute": (2, 90, 0), "rank": (1, 18, 0),
    "temp_c": (-4, 31, 0), "cm": (10, 120, 0), "minutes": (20, 45, 0), "persons": (2, 6, 0),
}

_COMMON_WORDS: dict[str, tuple[str, ...]] = {
    "dose": ("2,5 mg", "5 mg", "10 mg", "20 mg", "25 mg", "40 mg", "50 mg", "80 mg", "100 mg", "250 mg",
             "500 mg", "1000 mg"),
    "n": ("120", "240", "360", "480", "620", "850", "1200", "2400"),  # round, so Romanian "de" always fits
    "pvalue": ("< 0,001", "= 0,002", "= 0,01", "= 0,03", "= 0,04", "= 0,12", "= 0,35"),
    "nyha": ("II", "III", "IV"),
    "crowd": ("5000", "12000", "25000", "40000"),
    "km": ("145", "168", "182", "196", "224"),
    "oven": ("160", "180", "200", "220"),
}

_NL = _Language(
    terms={
        "DISEASE": ("hypertensie", "diabetes mellitus type 2", "atriumfibrilleren", "COPD", "astma", "pneumonie",
                    "urineweginfectie", "sepsis", "myocardinfarct", "CVA", "TIA", "longembolie",
                    "diep veneuze trombose", "chronische nierinsufficiëntie", "anemie", "hypothyreoïdie",
                    "depressie", "delier", "cholecystitis", "appendicitis", "diverticulitis", "erysipelas",
                    "artrose", "jicht", "osteoporose", "dementie"),
        "SYMPTOM": ("koorts", "hoofdpijn", "misselijkheid", "braken", "duizeligheid", "hoesten", "kortademigheid",
                    "buikpijn", "diarree", "obstipatie", "vermoeidheid", "nachtzweten", "gewichtsverlies",
                    "koude rillingen", "hartkloppingen", "verwardheid", "jeuk", "dysurie", "pollakisurie",
                    "sputumproductie"),
        "DRUG": ("paracetamol", "ibuprofen", "metformine", "insuline", "amoxicilline", "ceftriaxon", "prednison",
                 "omeprazol", "metoprolol", "amlodipine", "lisinopril", "atorvastatine", "apixaban",
                 "acenocoumarol", "morfine", "oxycodon", "levothyroxine", "salbutamol", "tiotropium",
                 "hydrochloorthiazide", "ciprofloxacine", "nitrofurantoïne", "diclofenac"),
        "PROCEDURE": ("ECG", "echocardiografie", "coloscopie", "gastroscopie", "bronchoscopie", "appendectomie",
                      "cholecystectomie", "lumbaalpunctie", "bloedtransfusie", "hemodialyse", "spirometrie",
                      "hartkatheterisatie"),
        "ANATOMY": ("buik", "rug", "nek", "knie", "schouder", "enkel", "heup", "pols", "thorax", "hals"),
    },
    cue_terms={
        "DISEASE": ("hartfalen", "decompensatio cordis"),
        "SYMPTOM": ("dyspneu bij inspanning", "orthopneu", "enkeloedeem", "nycturie",
                    "paroxysmale nachtelijke dyspneu"),
        "DRUG": ("furosemide", "bumetanide", "spironolacton", "sacubitril-valsartan", "bisoprolol",
                 "dapagliflozine"),
    },
    compounds={
        "DISEASE": (_Compound(("carcinoom van de", "tumor van de", "metastasen in de"),
                              ("long", "lever", "nier", "blaas", "maag", "prostaat", "schildklier", "alvleesklier",
                               "dikke darm")),
                    _Compound(("fractuur van de", "luxatie van de"),
                              ("heup", "pols", "enkel", "schouder", "elleboog"))),
        "SYMPTOM": (_Compound(("pijn in de", "zwelling van de"),
                              ("knie", "schouder", "enkel", "heup", "pols", "elleboog")),),
        "PROCEDURE": (_Compound(("CT-scan van de", "echografie van de", "MRI van de", "röntgenfoto van de"),
                                ("thorax", "buik", "knie", "schouder", "heup", "wervelkolom", "hals")),),
    },
    coordinator=" en de ",
    words={
        "sex": ("man", "vrouw"),
        "freq": ("1dd", "2dd", "3dd", "1x daags", "2x daags", "voor de nacht"),
        "ward": ("cardiologie", "longziekten", "interne geneeskunde", "chirurgie", "geriatrie", "neurologie", "MDL"),
        "design": ("retrospectief cohortonderzoek", "gerandomiseerde studie", "prospectieve observationele studie",
                   "multicentrische studie", "meta-analyse"),
        "weekday": ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag"),
        "weather": ("zonnig", "bewolkt", "wisselvallig", "droog en zacht", "grijs en regenachtig"),
        "direction": ("noorden", "oosten", "zuiden", "westen"),
        "precip": ("regen", "onweer", "hagel", "natte sneeuw"),
        "city": ("Utrecht", "Groningen", "Eindhoven", "Zwolle", "Leiden", "Maastricht", "Arnhem", "Delft"),
        "team": ("SV De Zwaluwen", "VV Oranje Boys", "FC Polderwijk", "Sportclub Heuvelrug", "RKVV De Valk"),
        "player": ("Daan Visser", "Sem de Boer", "Lucas Mulder", "Bram Smit", "Thijs Bakker"),
        "veg": ("wortel", "courgette", "paprika", "aubergine", "pompoen", "prei"),
        "herb": ("peterselie", "basilicum", "tijm", "koriander", "bieslook"),
        "dish": ("pompoensoep met gember", "ovenschotel met prei", "stamppot boerenkool", "pasta met paprikasaus"),
        "project": ("een nieuw zwembad", "een fietsbrug over de rivier", "tweehonderd huurwoningen",
                    "een nieuwe basisschool"),
        "theme": ("de Gouden Eeuw", "moderne architectuur", "de geschiedenis van de scheepvaart",
                  "schilders uit de negentiende eeuw"),
    },
    clinical_titles=("Ontslagbrief", "Voortgangsnotitie", "Poliklinische brief", "Consultverslag", "Opnameverslag"),
    clinical_sections=(
        ("Anamnese", (
            "Patiënt is een {age}-jarige {sex} die zich presenteert met {SYMPTOM} sinds {days} dagen.",
            "Klachten van {SYMPTOM} en {SYMPTOM}, geen {SYMPTOM}.",
            "Pt. meldt sinds enkele dagen {SYMPTOM}, vooral 's avonds.",
            "De huisarts verwijst in verband met {SYMPTOM} en verdenking op {DISEASE}.",
            "Geen {SYMPTOM}, wel toegenomen {SYMPTOM} de afgelopen {days} dagen.",
        )),
        ("Voorgeschiedenis", (
            "Voorgeschiedenis: {DISEASE}, {DISEASE} en {DISEASE}.",
            "Status na {PROCEDURE} in {year}.",
            "Bekend met {DISEASE} sinds {year}.",
            "Thuismedicatie: {DRUG} {dose} {freq}, {DRUG} {dose} {freq}.",
            "Allergie voor {DRUG}.",
        )),
        ("Lichamelijk onderzoek", (
            "RR {sys}/{dia} mmHg, pols {hr}/min, temp {temp} °C, saturatie {sat}% bij kamerlucht.",
            "Bij onderzoek van de {ANATOMY} geen afwijkingen.",
            "Algemeen: niet ziek ogend, alert en adequaat.",
            "Drukpijn ter hoogte van de {ANATOMY}, verder geen bijzonderheden.",
            "Cor: normale harttonen, geen souffles; pulmones: vesiculair ademgeruis b.d.z.",
        )),
        ("Aanvullend onderzoek", (
            "Lab: Hb {hb_mmol} mmol/l, CRP {crp} mg/l, kreatinine {creat_umol} µmol/l.",
            "{PROCEDURE} toonde geen afwijkingen.",
            "Er werd een {PROCEDURE} verricht in verband met verdenking op {DISEASE}.",
            "Afspraak gemaakt voor {PROCEDURE} over {weeks} weken.",
            "{PROCEDURE}: beeld passend bij {DISEASE}.",
        )),
        ("Conclusie", (
            "Conclusie: {DISEASE}.",
            "Opname in verband met {DISEASE}, gecompliceerd door {DISEASE}.",
            "Differentiaaldiagnose: {DISEASE} of {DISEASE}.",
            "Werkdiagnose {DISEASE}, {DISEASE} minder waarschijnlijk.",
        )),
        ("Beleid", (
            "Gestart met {DRUG} {dose} {freq}.",
            "Wegens {SYMPTOM} werd {DRUG} gestaakt.",
            "Pijnstilling met {DRUG} {dose} {freq} z.n.",
            "Controle op de polikliniek {ward} over {weeks} weken, eerder bij toename van {SYMPTOM}.",
            "Medicatie bij ontslag: {DRUG} {dose} {freq} en {DRUG} {dose} {freq}.",
            "{DRUG} i.v. omgezet naar p.o. na {days} dagen.",
        )),
    ),
    cues=(
        "Sinds enkele weken toenemende dyspneu bij inspanning, nu al na één trap.",
        "Slaapt met drie kussens in verband met orthopneu.",
        "Bij onderzoek pitting enkeloedeem beiderzijds tot halverwege de onderbenen.",
        "Crepitaties basaal b.d.z. bij auscultatie van de longen.",
        "NT-proBNP {bnp} ng/l, duidelijk verhoogd.",
        "Echocardiografie: linkerventrikelejectiefractie {ef}%, gedilateerde linkerventrikel.",
        "X-thorax: cardiomegalie met pleuravocht beiderzijds.",
        "Gewichtstoename van {kg} kg in één week ondanks zoutbeperking.",
        "Furosemide opgehoogd naar 40 mg 2dd wegens vochtretentie.",
        "Gestart met spironolacton 25 mg 1dd en sacubitril-valsartan.",
        "Nycturie, twee tot drie keer per nacht.",
        "Bekend met hartfalen, NYHA-klasse {nyha}.",
        "Verhoogde centraal veneuze druk bij inspectie van de hals.",
        "Vochtbeperking van 1,5 liter per dag en dagelijks wegen geadviseerd.",
        "Wordt 's nachts benauwd wakker en moet dan rechtop zitten.",
        "Verwezen naar de hartfalenpoli voor titratie van de medicatie.",
    ),
    decoys=(
        "Geen tekenen van hartfalen.",
        "NT-proBNP binnen normale grenzen.",
        "Geen enkeloedeem, geen crepitaties.",
        "Familieanamnese: vader overleden aan hartfalen.",
        "Echocardiografie: normale linkerventrikelfunctie, geen klepafwijkingen.",
        "Enkeloedeem waarschijnlijk bijwerking van amlodipine.",
        "Dyspneu bij inspanning passend bij bekend COPD.",
        "Eenmalig furosemide gegeven wegens hypertensieve ontregeling.",
    ),
    biomedical_titles=(
        "{DRUG} bij patiënten met {DISEASE}: resultaten van een {design}",
        "Risicofactoren voor {DISEASE} na {PROCEDURE}",
        "{SYMPTOM} als prognostische factor bij patiënten met {DISEASE}",
    ),
    biomedical_sections=(
        ("Achtergrond", (
            "{DISEASE} is een veelvoorkomende aandoening met een aanzienlijke ziektelast.",
            "Over de optimale behandeling van {DISEASE} bij oudere patiënten is weinig bekend.",
            "Eerdere studies suggereren een verband tussen {SYMPTOM} en een ongunstige prognose.",
            "De incidentie van deze aandoening is de afgelopen decennia toegenomen.",
        )),
        ("Methoden", (
            "In een {design} werden {n} patiënten met {DISEASE} geïncludeerd.",
            "Patiënten die tussen {year_from} en {year_to} een {PROCEDURE} ondergingen, kwamen in aanmerking.",
            "De primaire uitkomstmaat was het optreden van {DISEASE} binnen {months} maanden.",
            "Met multivariabele logistische regressie werd gecorrigeerd voor leeftijd, geslacht en comorbiditeit.",
            "Gegevens werden verzameld uit de elektronische patiëntendossiers van {hospitals} ziekenhuizen.",
        )),
        ("Resultaten", (
            "De gemiddelde leeftijd was {age} jaar en {pct}% van de deelnemers was vrouw.",
            "Behandeling met {DRUG} was geassocieerd met een lager risico op {DISEASE} "
            "(oddsratio {ratio}; p {pvalue}).",
            "Het percentage patiënten met {SYMPTOM} was {pct}% in de interventiegroep en {pct2}% in de controlegroep.",
            "Er werd geen significant verschil in mortaliteit gevonden tussen beide groepen (p {pvalue}).",
            "Bijwerkingen van {DRUG} waren meestal mild en van voorbijgaande aard.",
            "Bij {pct}% van de patiënten was een herinterventie nodig.",
        )),
        ("Conclusie", (
            "Deze resultaten suggereren dat {DRUG} een veilige behandeloptie is bij patiënten met {DISEASE}.",
            "Prospectief onderzoek is nodig om deze bevindingen te bevestigen.",
            "Vroege herkenning van symptomen zoals {SYMPTOM} kan de prognose van {DISEASE} verbeteren.",
        )),
    ),
    general_topics=(
        ("Het weer voor {weekday}", (
            "Morgen wordt het {weather} met maxima rond {temp_c} graden.",
            "In het {direction} van het land valt plaatselijk {precip}.",
            "De wind komt uit het {direction} en is matig tot vrij krachtig.",
            "Het weekend begint zonnig, maar zondag trekt een regenzone over het land.",
            "Volgens de weerdienst houdt de droogte nog zeker een week aan.",
            "In de nacht kan het in {city} licht vriezen.",
            "In de heuvels kan tot {cm} centimeter sneeuw vallen.",
        )),
        ("Sport", (
            "{team} won zaterdag met {goals}-{goals2} van {team2}.",
            "{player} maakte in minuut {minute} het beslissende doelpunt.",
            "De trainer was na afloop tevreden over de inzet van zijn ploeg.",
            "Door de overwinning klimt de club naar plaats {rank} in de competitie.",
            "De wielrenners legden een etappe van {km} kilometer af door de heuvels.",
            "Het toernooi trok dit jaar meer dan {crowd} toeschouwers.",
            "De scheidsrechter floot na een rommelige tweede helft af.",
        )),
        ("Recept: {dish}", (
            "Snijd de {veg} in blokjes en fruit de ui in een scheutje olijfolie.",
            "Voeg de {veg} toe en laat alles {minutes} minuten zachtjes sudderen.",
            "Breng op smaak met peper, zout en verse {herb}.",
            "Verwarm de oven voor op {oven} graden.",
            "Serveer het gerecht met rijst of vers brood.",
            "Dit recept is genoeg voor {persons} personen.",
            "Bewaar restjes afgedekt in de koelkast.",
        )),
        ("Nieuws uit {city}", (
            "De gemeenteraad van {city} stemde dinsdag in met de bouw van {project}.",
            "Volgens de wethouder moeten de werkzaamheden binnen {months} maanden klaar zijn.",
            "Het station van {city} was urenlang gesloten door een storing in de bovenleiding.",
            "Bewoners protesteerden tegen de plannen voor een nieuwe snelweg.",
            "De nieuwe bibliotheek in {city} trekt elke week honderden bezoekers.",
            "Het museum opent in het voorjaar een tentoonstelling over {theme}.",
            "De markt op het plein verhuist na de zomer naar de haven.",
        )),
    ),
)

_RO = _Language(
    terms={
        "DISEASE": ("hipertensiune arterială", "diabet zaharat tip 2", "fibrilație atrială", "BPOC", "astm bronșic",
                    "pneumonie", "infecție urinară", "sepsis", "infarct miocardic acut", "accident vascular cerebral",
                    "embolie pulmonară", "tromboză venoasă profundă", "boală renală cronică", "anemie feriprivă",
                    "hipotiroidism", "depresie", "sindrom confuzional", "colecistită acută", "apendicită acută",
                    "diverticulită", "erizipel", "gonartroză", "gută", "osteoporoză", "demență"),
        "SYMPTOM": ("febră", "cefalee", "greață", "vărsături", "amețeli", "tuse", "dispnee", "durere abdominală",
                    "diaree", "constipație", "astenie", "transpirații nocturne", "scădere ponderală", "frisoane",
                    "palpitații", "confuzie", "prurit", "disurie", "polakiurie", "expectorație"),
        "DRUG": ("paracetamol", "ibuprofen", "metformin", "insulină", "amoxicilină", "ceftriaxonă", "prednison",
                 "omeprazol", "metoprolol", "amlodipină", "lisinopril", "atorvastatină", "apixaban", "acenocumarol",
                 "morfină", "tramadol", "levotiroxină", "salbutamol", "tiotropium", "hidroclorotiazidă",
                 "ciprofloxacină", "nitrofurantoin", "diclofenac"),
        "PROCEDURE": ("EKG", "ecocardiografie", "colonoscopie", "endoscopie digestivă superioară", "bronhoscopie",
                      "apendicectomie", "colecistectomie", "puncție lombară", "transfuzie de sânge", "hemodializă",
                      "spirometrie", "coronarografie"),
        "ANATOMY": ("genunchi", "umăr", "gleznă", "șold", "abdomen", "torace", "coloană lombară", "gât", "cot"),
    },
    cue_terms={
        "DISEASE": ("insuficiență cardiacă", "insuficiență cardiacă congestivă"),
        "SYMPTOM": ("dispnee de efort", "ortopnee", "edeme gambiere", "nicturie", "dispnee paroxistică nocturnă"),
        "DRUG": ("furosemid", "torasemid", "spironolactonă", "sacubitril-valsartan", "bisoprolol", "dapagliflozin"),
    },
    compounds={
        "DISEASE": (_Compound(("cancer de", "carcinom de", "tumoră de"),
                              ("plămân", "ficat", "colon", "prostată", "pancreas", "stomac", "vezică urinară",
                               "tiroidă", "rinichi", "sân")),
                    _Compound(("fractură de", "luxație de"), ("șold", "gleznă", "umăr", "cot", "genunchi"))),
        "SYMPTOM": (_Compound(("durere de",), ("genunchi", "umăr", "gleznă", "șold", "cot", "spate")),),
        "PROCEDURE": (_Compound(("radiografie de", "RMN de", "CT de", "ecografie de"),
                                ("torace", "abdomen", "genunchi", "umăr", "șold", "coloană lombară")),),
    },
    coordinator=" și de ",
    words={
        "patient": ("Pacientul", "Pacienta"),
        "freq": ("o dată pe zi", "de două ori pe zi", "de trei ori pe zi", "la nevoie", "seara", "dimineața"),
        "ward": ("cardiologie", "pneumologie", "medicină internă", "chirurgie generală", "geriatrie", "neurologie",
                 "gastroenterologie"),
        "design": ("studiu retrospectiv de cohortă", "studiu randomizat controlat", "studiu prospectiv observațional",
                   "studiu multicentric"),
        "weekday": ("luni", "marți", "miercuri", "joi", "vineri", "sâmbătă", "duminică"),
        "weather": ("însorită", "noroasă", "schimbătoare", "caldă și uscată", "ploioasă"),
        "direction": ("nord", "est", "sud", "vest"),
        "region": ("Moldova", "Transilvania", "Banat", "Oltenia", "Dobrogea", "Muntenia", "Maramureș"),
        "city": ("București", "Cluj-Napoca", "Iași", "Timișoara", "Brașov", "Constanța", "Sibiu", "Craiova"),
        "team": ("AS Dunărea", "FC Carpații", "CS Viitorul Olt", "Progresul Mureș", "Unirea Câmpina"),
        "player": ("Andrei Popescu", "Mihai Ionescu", "Ștefan Dumitrescu", "Radu Stanciu", "Vlad Țurcanu"),
        "veg": ("morcovii", "dovleceii", "ardeii", "vinetele", "cartofii", "prazul"),
        "herb": ("mărar", "pătrunjel", "cimbru", "busuioc", "leuștean"),
        "dish": ("Ciorbă de legume", "Tocăniță de ciuperci", "Plăcintă cu brânză", "Sarmale în foi de varză",
                 "Musaca de vinete"),
        "project": ("un nou bazin de înot", "o pistă de biciclete de-a lungul râului", "două sute de locuințe sociale",
                    "o școală nouă"),
        "theme": ("arta bizantină", "arhitectura modernă", "istoria navigației pe Dunăre", "pictorii secolului XIX"),
    },
    clinical_titles=("Scrisoare medicală", "Bilet de externare", "Notă de evoluție", "Consult de specialitate",
                     "Foaie de observație"),
    clinical_sections=(
        ("Anamneză", (
            "{patient} în vârstă de {age} de ani se prezintă pentru {SYMPTOM} de aproximativ {days} zile.",
            "Acuză {SYMPTOM} și {SYMPTOM}, neagă {SYMPTOM}.",
            "Din anamneză reținem episoade de {SYMPTOM} în ultima săptămână.",
            "Trimitere de la medicul de familie pentru {SYMPTOM} și suspiciune de {DISEASE}.",
            "Nu prezintă {SYMPTOM}, dar relatează {SYMPTOM} de {days} zile.",
        )),
        ("Antecedente personale patologice", (
            "APP: {DISEASE}, {DISEASE} și {DISEASE}.",
            "Status post {PROCEDURE} în {year}.",
            "În evidență cu {DISEASE} din {year}.",
            "Tratament la domiciliu: {DRUG} {dose} {freq}, {DRUG} {dose} {freq}.",
            "Alergie la {DRUG}.",
        )),
        ("Examen clinic", (
            "TA {sys}/{dia} mmHg, AV {hr} bătăi/min, temperatura {temp} °C, SpO2 {sat}% în aer atmosferic.",
            "Examen local ({ANATOMY}): fără modificări patologice.",
            "Stare generală bună, echilibrat hemodinamic, fără semne de insuficiență respiratorie.",
            "Zgomote cardiace ritmice, fără sufluri; murmur vezicular prezent bilateral.",
            "Abdomen suplu, mobil cu respirația, nedureros la palpare.",
        )),
        ("Investigații paraclinice", (
            "Analize: Hb {hb_gdl} g/dl, CRP {crp} mg/l, creatinină {creat_mgdl} mg/dl.",
            "{PROCEDURE}: fără modificări patologice.",
            "S-a efectuat {PROCEDURE} pentru suspiciunea de {DISEASE}.",
            "Se programează {PROCEDURE} peste {weeks} săptămâni.",
            "{PROCEDURE}: aspect sugestiv pentru {DISEASE}.",
        )),
        ("Diagnostic", (
            "Diagnostic la internare: {DISEASE}.",
            "Diagnostic la externare: {DISEASE}; diagnostic secundar: {DISEASE}.",
            "Diagnostic diferențial: {DISEASE} sau {DISEASE}.",
            "Se confirmă {DISEASE}, se exclude {DISEASE}.",
        )),
        ("Tratament și recomandări", (
            "Se inițiază tratament cu {DRUG} {dose} {freq}.",
            "Se întrerupe {DRUG} din cauza reacțiilor adverse.",
            "Analgezie cu {DRUG} {dose} {freq}.",
            "Control în ambulatoriul de {ward} peste {weeks} săptămâni sau mai devreme în caz de {SYMPTOM}.",
            "Tratament la externare: {DRUG} {dose} {freq} și {DRUG} {dose} {freq}.",
            "{DRUG} i.v. timp de {days} zile, apoi p.o.",
        )),
    ),
    cues=(
        "De câteva săptămâni prezintă dispnee de efort progresivă, acum la urcarea unui etaj.",
        "Doarme cu trei perne din cauza ortopneei.",
        "La examenul clinic: edeme gambiere bilaterale, cu godeu.",
        "Raluri crepitante bazal bilateral la auscultație.",
        "NT-proBNP {bnp} pg/ml, mult crescut.",
        "Ecocardiografie: fracție de ejecție a ventriculului stâng {ef}%, ventricul stâng dilatat.",
        "Radiografie toracică: cardiomegalie și revărsat pleural bilateral.",
        "Creștere în greutate de {kg} kg într-o săptămână, în ciuda dietei hiposodate.",
        "Se crește doza de furosemid la 40 mg de două ori pe zi pentru retenție hidrică.",
        "Se inițiază spironolactonă 25 mg pe zi și sacubitril-valsartan.",
        "Nicturie, de două-trei ori pe noapte.",
        "În evidență cu insuficiență cardiacă, clasa NYHA {nyha}.",
        "Turgescență jugulară la inspecția gâtului.",
        "Se recomandă restricție hidrică de 1,5 litri pe zi și cântărire zilnică.",
        "Se trezește noaptea cu senzație de sufocare și trebuie să stea în șezut.",
        "Trimitere la cabinetul de insuficiență cardiacă pentru ajustarea tratamentului.",
    ),
    decoys=(
        "Fără semne de insuficiență cardiacă.",
        "NT-proBNP în limite normale.",
        "Fără edeme gambiere, fără raluri.",
        "Antecedente heredocolaterale: tatăl a decedat prin insuficiență cardiacă.",
        "Ecocardiografie: funcție sistolică a ventriculului stâng păstrată.",
        "Edemele gambiere sunt probabil un efect advers al amlodipinei.",
        "Dispneea de efort este explicată de BPOC cunoscută.",
        "Furosemid administrat o singură dată pentru valori tensionale crescute.",
    ),
    biomedical_titles=(
        "{DRUG} la pacienții cu {DISEASE}: rezultatele unui {design}",
        "Factori de risc pentru {DISEASE} după {PROCEDURE}",
        "{SYMPTOM} ca factor prognostic la pacienții cu {DISEASE}",
    ),
    biomedical_sections=(
        ("Introducere", (
            "Diagnosticul de {DISEASE} reprezintă o povară importantă pentru sistemul de sănătate.",
            "Datele privind tratamentul optim al pacienților vârstnici cu {DISEASE} sunt limitate.",
            "Studii anterioare au sugerat o asociere între {SYMPTOM} și un prognostic nefavorabil.",
            "Incidența acestei afecțiuni a crescut în ultimele decenii.",
        )),
        ("Metode", (
            "Într-un {design} au fost incluși {n} de pacienți cu {DISEASE}.",
            "Au fost eligibili pacienții la care s-a efectuat {PROCEDURE} între {year_from} și {year_to}.",
            "Criteriul principal de evaluare a fost incidența cazurilor de {DISEASE} la {months} luni.",
            "Analiza multivariată prin regresie logistică a fost ajustată pentru vârstă, sex și comorbidități.",
            "Datele au fost extrase din dosarele electronice ale pacienților din {hospitals} spitale.",
        )),
        ("Rezultate", (
            "Vârsta medie a fost de {age} de ani, iar {pct}% dintre participanți au fost femei.",
            "Tratamentul cu {DRUG} s-a asociat cu un risc mai mic de {DISEASE} (odds ratio {ratio}; p {pvalue}).",
            "Proporția pacienților cu {SYMPTOM} a fost de {pct}% în grupul de intervenție "
            "și de {pct2}% în grupul de control.",
            "Nu s-a observat o diferență semnificativă a mortalității între cele două grupuri (p {pvalue}).",
            "Reacțiile adverse la {DRUG} au fost în general ușoare și tranzitorii.",
            "Reintervenția a fost necesară la {pct}% dintre pacienți.",
        )),
        ("Concluzii", (
            "Rezultatele sugerează că {DRUG} reprezintă o opțiune terapeutică sigură la pacienții cu {DISEASE}.",
            "Sunt necesare studii prospective pentru confirmarea acestor rezultate.",
            "Recunoașterea precoce a simptomelor precum {SYMPTOM} poate îmbunătăți prognosticul în {DISEASE}.",
        )),
    ),
    general_topics=(
        ("Prognoza meteo pentru {weekday}", (
            "Mâine vremea va fi {weather}, cu temperaturi maxime de {temp_c} °C.",
            "În {region} se vor semnala ploi slabe și descărcări electrice.",
            "Vântul va sufla moderat din direcția {direction}.",
            "La munte, stratul de zăpadă poate ajunge la {cm} cm.",
            "Meteorologii anunță că seceta va continua cel puțin încă o săptămână.",
            "În timpul nopții, în {city} sunt posibile brume.",
            "Weekendul începe însorit, dar duminică un front atmosferic aduce ploi.",
        )),
        ("Sport", (
            "{team} a câștigat sâmbătă cu {goals}-{goals2} în fața echipei {team2}.",
            "{player} a marcat golul decisiv în minutul {minute}.",
            "Antrenorul s-a declarat mulțumit de atitudinea jucătorilor săi.",
            "După această victorie, echipa urcă pe locul {rank} în clasament.",
            "Cicliștii au parcurs o etapă de {km} de kilometri prin zona deluroasă.",
            "Turneul a atras anul acesta peste {crowd} de spectatori.",
            "Arbitrul a fluierat finalul după o repriză a doua agitată.",
        )),
        ("Rețeta zilei: {dish}", (
            "Tăiați {veg} cubulețe și căliți ceapa într-un strop de ulei.",
            "Adăugați {veg} și lăsați totul să fiarbă la foc mic timp de {minutes} de minute.",
            "Asezonați cu sare, piper și {herb} proaspăt.",
            "Preîncălziți cuptorul la {oven} de grade.",
            "Serviți preparatul cu smântână și mămăligă caldă.",
            "Rețeta este suficientă pentru {persons} persoane.",
            "Păstrați resturile acoperite în frigider.",
        )),
        ("Știri din {city}", (
            "Consiliul local din {city} a aprobat marți proiectul pentru {project}.",
            "Potrivit primarului, lucrările ar trebui finalizate până la sfârșitul anului.",
            "Gara din {city} a fost închisă câteva ore din cauza unei avarii.",
            "Locuitorii au protestat față de planurile pentru o nouă autostradă.",
            "Noua bibliotecă din {city} primește în fiecare săptămână sute de vizitatori.",
            "Muzeul deschide în primăvară o expoziție despre {theme}.",
            "Piața din centru se mută după vară lângă port.",
        )),
    ),
)

_ES = _Language(
    terms={
        "DISEASE": ("hipertensión arterial", "diabetes mellitus tipo 2", "fibrilación auricular", "EPOC", "asma",
                    "neumonía", "infección del tracto urinario", "sepsis", "infarto agudo de miocardio", "ictus",
                    "tromboembolismo pulmonar", "trombosis venosa profunda", "enfermedad renal crónica",
                    "anemia ferropénica", "hipotiroidismo", "depresión", "síndrome confusional", "colecistitis aguda",
                    "apendicitis aguda", "diverticulitis", "erisipela", "artrosis", "gota", "osteoporosis",
                    "demencia"),
        "SYMPTOM": ("fiebre", "cefalea", "náuseas", "vómitos", "mareo", "tos", "disnea", "dolor abdominal", "diarrea",
                    "estreñimiento", "astenia", "sudoración nocturna", "pérdida de peso", "escalofríos",
                    "palpitaciones", "confusión", "prurito", "disuria", "polaquiuria", "expectoración"),
        "DRUG": ("paracetamol", "ibuprofeno", "metformina", "insulina", "amoxicilina", "ceftriaxona", "prednisona",
                 "omeprazol", "metoprolol", "amlodipino", "enalapril", "atorvastatina", "apixabán", "acenocumarol",
                 "morfina", "tramadol", "levotiroxina", "salbutamol", "tiotropio", "hidroclorotiazida",
                 "ciprofloxacino", "fosfomicina", "diclofenaco"),
        "PROCEDURE": ("ECG", "ecocardiograma", "colonoscopia", "gastroscopia", "broncoscopia", "apendicectomía",
                      "colecistectomía", "punción lumbar", "transfusión de hematíes", "hemodiálisis", "espirometría",
                      "cateterismo cardíaco"),
        "ANATOMY": ("rodilla", "hombro", "tobillo", "cadera", "abdomen", "tórax", "columna lumbar", "cuello", "codo"),
    },
    cue_terms={
        "DISEASE": ("insuficiencia cardíaca", "insuficiencia cardíaca congestiva"),
        "SYMPTOM": ("disnea de esfuerzo", "ortopnea", "edemas en miembros inferiores", "nicturia",
                    "disnea paroxística nocturna"),
        "DRUG": ("furosemida", "torasemida", "espironolactona", "sacubitrilo-valsartán", "bisoprolol",
                 "dapagliflozina"),
    },
    compounds={
        "DISEASE": (_Compound(("carcinoma de", "cáncer de", "tumor de"),
                              ("pulmón", "hígado", "colon", "próstata", "páncreas", "estómago", "vejiga", "tiroides",
                               "riñón", "mama")),
                    _Compound(("fractura de", "luxación de"), ("cadera", "tobillo", "hombro", "codo", "muñeca"))),
        "SYMPTOM": (_Compound(("dolor de",), ("rodilla", "hombro", "tobillo", "cadera", "codo", "espalda")),),
        "PROCEDURE": (_Compound(("radiografía de", "resonancia magnética de", "TC de", "ecografía de"),
                                ("tórax", "abdomen", "rodilla", "hombro", "cadera", "columna lumbar")),),
    },
    coordinator=" y de ",
    words={
        "patient": ("Varón", "Mujer"),
        "freq": ("cada 8 horas", "cada 12 horas", "cada 24 horas", "si precisa", "en el desayuno", "por la noche"),
        "ward": ("cardiología", "neumología", "medicina interna", "cirugía general", "geriatría", "neurología",
                 "digestivo"),
        "design": ("estudio de cohortes retrospectivo", "ensayo clínico aleatorizado",
                   "estudio observacional prospectivo", "estudio multicéntrico", "metaanálisis"),
        "weekday": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
        "weather": ("soleado", "nuboso", "variable", "cálido y seco", "lluvioso"),
        "direction": ("norte", "este", "sur", "oeste"),
        "city": ("Madrid", "Sevilla", "Valencia", "Zaragoza", "Bilbao", "Salamanca", "Granada", "Málaga"),
        "team": ("Atlético Ribera", "Deportivo Sierra", "Real Club Marina", "Club Deportivo Valle", "Racing Llanura"),
        "player": ("Javier Muñoz", "Pablo Herrera", "Diego Castaño", "Álvaro Núñez", "Íñigo Peña"),
        "veg": ("las zanahorias", "el calabacín", "los pimientos", "la berenjena", "las patatas", "el puerro"),
        "herb": ("perejil", "cilantro", "tomillo", "orégano", "romero"),
        "dish": ("crema de calabaza", "tortilla de patatas", "lentejas estofadas", "pisto manchego",
                 "arroz con verduras"),
        "project": ("una nueva piscina municipal", "un carril bici junto al río", "doscientas viviendas sociales",
                    "un nuevo colegio"),
        "theme": ("el Siglo de Oro", "la arquitectura moderna", "la historia de la navegación",
                  "los pintores del siglo diecinueve"),
    },
    clinical_titles=("Informe de alta", "Nota de evolución", "Informe de consulta", "Interconsulta",
                     "Informe de ingreso"),
    clinical_sections=(
        ("Anamnesis", (
            "{patient} de {age} años que acude a urgencias por {SYMPTOM} de {days} días de evolución.",
            "Refiere {SYMPTOM} y {SYMPTOM}, niega {SYMPTOM}.",
            "En los últimos días presenta episodios de {SYMPTOM}.",
            "Derivación desde atención primaria por {SYMPTOM} y sospecha de {DISEASE}.",
            "No presenta {SYMPTOM}, pero sí {SYMPTOM} desde hace {days} días.",
        )),
        ("Antecedentes personales", (
            "AP: {DISEASE}, {DISEASE} y {DISEASE}.",
            "Antecedente de {PROCEDURE} en {year}.",
            "En seguimiento por {DISEASE} desde {year}.",
            "Tratamiento habitual: {DRUG} {dose} {freq}, {DRUG} {dose} {freq}.",
            "Alergia a {DRUG}.",
        )),
        ("Exploración física", (
            "TA {sys}/{dia} mmHg, FC {hr} lpm, Tª {temp} °C, SatO2 {sat}% basal.",
            "Exploración de {ANATOMY}: sin alteraciones.",
            "Buen estado general, hemodinámicamente estable, sin signos de dificultad respiratoria.",
            "AC: rítmica, sin soplos; AP: murmullo vesicular conservado.",
            "Abdomen blando y depresible, no doloroso a la palpación.",
        )),
        ("Pruebas complementarias", (
            "Analítica: Hb {hb_gdl} g/dl, PCR {crp} mg/l, creatinina {creat_mgdl} mg/dl.",
            "{PROCEDURE}: sin hallazgos significativos.",
            "Se realiza {PROCEDURE} ante la sospecha de {DISEASE}.",
            "Se solicita {PROCEDURE} en {weeks} semanas.",
            "{PROCEDURE}: hallazgos compatibles con {DISEASE}.",
        )),
        ("Juicio clínico", (
            "Juicio clínico: {DISEASE}.",
            "Diagnóstico principal: {DISEASE}; diagnóstico secundario: {DISEASE}.",
            "Diagnóstico diferencial entre {DISEASE} y {DISEASE}.",
            "Se confirma {DISEASE} y se descarta {DISEASE}.",
        )),
        ("Tratamiento y recomendaciones", (
            "Se inicia tratamiento con {DRUG} {dose} {freq}.",
            "Se suspende {DRUG} por {SYMPTOM}.",
            "Analgesia con {DRUG} {dose} {freq}.",
            "Control en consultas externas de {ward} en {weeks} semanas; acudir a urgencias si presenta {SYMPTOM}.",
            "Tratamiento al alta: {DRUG} {dose} {freq} y {DRUG} {dose} {freq}.",
            "{DRUG} i.v. durante {days} días, después v.o.",
        )),
    ),
    cues=(
        "Desde hace unas semanas presenta disnea de esfuerzo progresiva, ahora al subir un piso.",
        "Duerme con tres almohadas por ortopnea.",
        "A la exploración, edemas con fóvea en ambos miembros inferiores.",
        "Crepitantes bibasales a la auscultación pulmonar.",
        "NT-proBNP {bnp} pg/ml, claramente elevado.",
        "Ecocardiograma: fracción de eyección del ventrículo izquierdo del {ef}%, ventrículo izquierdo dilatado.",
        "Radiografía de tórax: cardiomegalia y derrame pleural bilateral.",
        "Aumento de peso de {kg} kg en una semana a pesar de la dieta sin sal.",
        "Se aumenta la furosemida a 40 mg cada 12 horas por retención hídrica.",
        "Se inicia espironolactona 25 mg al día y sacubitrilo-valsartán.",
        "Nicturia, dos o tres veces por noche.",
        "Insuficiencia cardíaca conocida, clase funcional NYHA {nyha}.",
        "Ingurgitación yugular a la inspección del cuello.",
        "Se recomienda restricción hídrica de 1,5 litros al día y control diario del peso.",
        "Se despierta por la noche con sensación de ahogo y tiene que sentarse.",
        "Derivación a la unidad de insuficiencia cardíaca para ajuste del tratamiento.",
    ),
    decoys=(
        "Sin signos de insuficiencia cardíaca.",
        "NT-proBNP dentro de la normalidad.",
        "Sin edemas ni crepitantes.",
        "Antecedentes familiares: padre fallecido por insuficiencia cardíaca.",
        "Ecocardiograma: función sistólica del ventrículo izquierdo conservada.",
        "Edemas maleolares probablemente secundarios al amlodipino.",
        "La disnea de esfuerzo se explica por su EPOC conocida.",
        "Dosis única de furosemida por cifras tensionales elevadas.",
    ),
    biomedical_titles=(
        "{DRUG} en pacientes con {DISEASE}: resultados de un {design}",
        "Factores de riesgo de {DISEASE} tras {PROCEDURE}",
        "{SYMPTOM} como factor pronóstico en pacientes con {DISEASE}",
    ),
    biomedical_sections=(
        ("Introducción", (
            "El diagnóstico de {DISEASE} supone una elevada carga asistencial.",
            "Existen pocos datos sobre el tratamiento óptimo de {DISEASE} en pacientes de edad avanzada.",
            "Estudios previos sugieren una asociación entre {SYMPTOM} y un peor pronóstico.",
            "La incidencia de esta enfermedad ha aumentado en las últimas décadas.",
        )),
        ("Métodos", (
            "Se incluyeron {n} pacientes con {DISEASE} en un {design}.",
            "Se seleccionaron los pacientes sometidos a {PROCEDURE} entre {year_from} y {year_to}.",
            "La variable principal fue la aparición de {DISEASE} en los {months} meses siguientes.",
            "Se utilizó regresión logística multivariante ajustada por edad, sexo y comorbilidad.",
            "Los datos se obtuvieron de la historia clínica electrónica de {hospitals} hospitales.",
        )),
        ("Resultados", (
            "La edad media fue de {age} años y el {pct}% de los participantes eran mujeres.",
            "El tratamiento con {DRUG} se asoció a un menor riesgo de {DISEASE} (odds ratio {ratio}; p {pvalue}).",
            "La proporción de pacientes con {SYMPTOM} fue del {pct}% en el grupo de intervención "
            "y del {pct2}% en el grupo control.",
            "No se observaron diferencias significativas en la mortalidad entre ambos grupos (p {pvalue}).",
            "Los efectos adversos de {DRUG} fueron en general leves y transitorios.",
            "Fue necesaria una reintervención en el {pct}% de los pacientes.",
        )),
        ("Conclusiones", (
            "Estos resultados sugieren que {DRUG} es una opción terapéutica segura en pacientes con {DISEASE}.",
            "Se necesitan estudios prospectivos para confirmar estos hallazgos.",
            "El reconocimiento precoz de síntomas como {SYMPTOM} puede mejorar el pronóstico de {DISEASE}.",
        )),
    ),
    general_topics=(
        ("El tiempo para el {weekday}", (
            "Mañana el tiempo será {weather}, con máximas de {temp_c} grados.",
            "En el {direction} de la península se esperan lluvias débiles y tormentas.",
            "El viento soplará moderado del {direction}.",
            "En las zonas de montaña podrían acumularse hasta {cm} centímetros de nieve.",
            "Los meteorólogos prevén que la sequía se prolongue al menos una semana más.",
            "Durante la noche no se descartan heladas en {city}.",
            "El fin de semana empieza soleado, pero el domingo llegará un frente con lluvias.",
        )),
        ("Deportes", (
            "El {team} ganó el sábado por {goals}-{goals2} al {team2}.",
            "{player} marcó el gol decisivo en el minuto {minute}.",
            "El entrenador se mostró satisfecho con la actitud de sus jugadores.",
            "Con esta victoria, el equipo sube al puesto {rank} de la clasificación.",
            "Los ciclistas recorrieron una etapa de {km} kilómetros por la sierra.",
            "El torneo reunió este año a más de {crowd} espectadores.",
            "El árbitro señaló el final tras una segunda parte muy disputada.",
        )),
        ("Receta: {dish}", (
            "Corta {veg} en dados y sofríe la cebolla en un chorrito de aceite de oliva.",
            "Añade {veg} y deja cocer a fuego lento durante {minutes} minutos.",
            "Salpimienta y añade {herb} fresco al final.",
            "Precalienta el horno a {oven} grados.",
            "Sirve el plato acompañado de pan recién hecho.",
            "Esta receta es para {persons} personas.",
            "Guarda las sobras tapadas en el frigorífico.",
        )),
        ("Noticias de {city}", (
            "El pleno del ayuntamiento de {city} aprobó el martes el proyecto de {project}.",
            "Según el alcalde, las obras deberían terminar en {months} meses.",
            "La estación de {city} permaneció cerrada durante horas por una avería.",
            "Los vecinos protestaron contra el plan de una nueva autopista.",
            "La nueva biblioteca de {city} recibe cada semana a cientos de visitantes.",
            "El museo inaugurará en primavera una exposición sobre {theme}.",
            "El mercado de la plaza se trasladará al puerto después del verano.",
        )),
    ),
)

_LANGUAGES: dict[str, _Language] = {"nl": _NL, "ro": _RO, "es": _ES}
