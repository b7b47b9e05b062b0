"""The generator: template filling and the documents of each genre, for one language's vocabulary.

The design makes domain adaptation measurable: the clinical corpus is built from the same templates, entity
words and screening cues as the NER and screening text; the biomedical corpus shares the entity words but not
the phrasing; the general corpus (news, weather, sports, cooking) shares almost nothing. Half of the entity
terms never occur in NER training or dev documents, only in the test documents and the corpora
(held_out_terms), and a test document's plain entity slot names one of them most of the time
(TEST_HELD_OUT_RATE), so tagging the test set rewards a model that learned the domain's words in pretraining, by
a margin that neither the fine-tuning seed nor another CPU's floating-point rounding decides.

Screening target: heart failure. A positive patient's notes carry several of its symptoms, findings and
drugs scattered among ordinary sentences; negatives carry negated or explained-away mentions and the odd
stray cue, so no single word separates the classes.

Every function draws only from the `random.Random` it is given, so the caller decides what is reproducible.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from medtrain.data.sample.spans import ENTITY_TYPES, Entity, Phrase, join
from medtrain.data.sample.vocabulary import COMMON_WORDS, NUMBERS, Compound, Language

DOMAINS = ("clinical", "biomedical", "general")
HELD_OUT = 2               # every HELD_OUT-th entity term of a type is in NER test documents only (held_out_terms)
TEST_HELD_OUT_RATE = 0.8   # of a test document's plain entity slots, the share that names a held-out term: drawn
                           # uniformly, a quarter of the test mentions were held out, and the clinical model's NER
                           # gain (+0.07 F1) was within the seed-to-seed spread on another CPU
_COMPOUND_RATE = {"DISEASE": 0.3, "SYMPTOM": 0.2, "PROCEDURE": 0.35}  # "head site" with a nested ANATOMY
_COORDINATION_RATE = 0.15  # of compounds: "head site1 en de site2" -> a discontinuous second entity
_POSITIVE_CUE_BIAS = 0.15  # how often a positive patient's entity slot names a target-condition term
_SLOT = re.compile(r"\{(\w+?)\d?\}")  # a trailing digit asks for a second, independent draw: {team2}


@dataclass
class _Filler:
    """Fills template slots for one language; `cue_rate` tilts entity slots toward the screening target."""

    lang: Language
    rng: random.Random
    cue_rate: float = 0.0
    exclude: frozenset[str] = frozenset()  # terms this text may not use (held out of NER training)
    prefer: frozenset[str] = frozenset()  # terms an entity slot names at prefer_rate (NER test: the held-out ones)
    prefer_rate: float = 0.0
    used: set[str] = field(default_factory=set)  # terms already in this sentence: no "X, Y and X"

    def new_sentence(self) -> None:
        self.used.clear()

    def __call__(self, slot: str) -> Phrase:
        if slot in ENTITY_TYPES:
            return self._entity(slot)
        words = self.lang.words.get(slot) or COMMON_WORDS.get(slot)
        if words:
            return Phrase(self.rng.choice(words))
        low, high, decimals = NUMBERS[slot]
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
        if self.prefer and self.rng.random() < self.prefer_rate:
            pool = [term for term in pool if term in self.prefer] or pool
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
    sentence = join(parts)
    return Phrase(sentence.text[:1].upper() + sentence.text[1:], sentence.entities)


def _compound(rng: random.Random, label: str, compound: Compound, coordinator: str) -> Phrase:
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


def _clinical_doc(lang: Language, rng: random.Random) -> str:
    """A discharge letter or progress note; some carry a screening cue or decoy, as real notes would."""
    fill = _Filler(lang, rng)
    lines = _sectioned(rng, fill, lang.clinical_titles, lang.clinical_sections, _doc_length(rng))
    extras = [rng.choice(pool) for pool, p in ((lang.cues, 0.3), (lang.decoys, 0.2)) if rng.random() < p]
    _scatter(lines, extras, rng, fill)
    return "\n".join(line.text for line in lines)


def _biomedical_doc(lang: Language, rng: random.Random) -> str:
    """A literature-style abstract: the entity words of the clinical text, in scientific phrasing."""
    fill = _Filler(lang, rng)
    lines = _sectioned(rng, fill, lang.biomedical_titles, lang.biomedical_sections, _doc_length(rng))
    return "\n".join(line.text for line in lines)


def _general_doc(lang: Language, rng: random.Random) -> str:
    """A news, weather, sports or cooking text with no medical vocabulary."""
    title, sentences = rng.choice(lang.general_topics)
    lines = _sectioned(rng, _Filler(lang, rng), (title,), (("", sentences),), _doc_length(rng))
    return "\n".join(line.text for line in lines)


DOCUMENT_MAKERS: dict[str, Callable[[Language, random.Random], str]] = {
    "clinical": _clinical_doc, "biomedical": _biomedical_doc, "general": _general_doc,
}


def held_out_terms(lang: Language) -> frozenset[str]:
    """Every HELD_OUT-th plain entity term of each type: absent from NER training and dev documents, present in
    the NER test documents and in the corpora, as rare clinical words are seen in unlabelled notes but not in a
    small annotated set. Tagging them takes knowing the domain's words: what domain pretraining should bring."""
    sites = {site for compounds in lang.compounds.values() for compound in compounds for site in compound.sites}
    return frozenset(term for terms in lang.terms.values() for term in terms[HELD_OUT - 1::HELD_OUT]
                     if term not in sites)  # a compound's site is also annotated, as ANATOMY


def ner_doc(lang: Language, rng: random.Random, test: bool) -> Phrase:
    """A clinical note with every entity annotated; one sentence per line, ending in a newline. Training and dev
    notes never name a held-out term; test notes mostly do (TEST_HELD_OUT_RATE)."""
    held_out = held_out_terms(lang)
    fill = _Filler(lang, rng, exclude=frozenset() if test else held_out, prefer=held_out if test else frozenset(),
                   prefer_rate=TEST_HELD_OUT_RATE)
    lines = _sectioned(rng, fill, lang.clinical_titles, lang.clinical_sections, rng.randint(6, 20))
    doc = join(lines, "\n")
    return Phrase(doc.text + "\n", doc.entities)


def _note_cues(lang: Language, rng: random.Random, positive: bool) -> list[str]:
    """Cue sentences for one note: several in most positive notes; decoys and a stray cue in negatives."""
    if positive:
        n_cues = rng.randint(0, 1) if rng.random() < 0.2 else rng.randint(2, 6)
        n_decoys = int(rng.random() < 0.2)
    else:
        n_cues = int(rng.random() < 0.25)
        n_decoys = rng.choice((0, 0, 1, 1, 2))
    return rng.sample(lang.cues, n_cues) + rng.sample(lang.decoys, n_decoys)


def screening_note(lang: Language, rng: random.Random, positive: bool) -> str:
    """A long clinical note; a positive patient's notes lean toward the target condition's terms and cues."""
    fill = _Filler(lang, rng, _POSITIVE_CUE_BIAS if positive else 0.0)
    lines = _sectioned(rng, fill, lang.clinical_titles, lang.clinical_sections, rng.randint(20, 70))
    _scatter(lines, _note_cues(lang, rng, positive), rng, fill)
    return "\n".join(line.text for line in lines)

