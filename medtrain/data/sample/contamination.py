"""Planted contamination in the sample's clinical corpora, as real hospital dumps have it.

Why: a hospital's note dump used for further pretraining usually holds the very notes that a NER or screening
test set was annotated from, copied whole, re-exported with other whitespace or case, or pasted into a longer
letter, and it holds other notes of the test set's patients. `medtrain prepare`'s `exclude:` section
(decontaminate.py) must find them, so the sample carries a few of each kind, and `contamination.json` says where
(line, kind, source; never text), so a test can check what was removed and what was missed:

    verbatim    a NER test document's text as it is (es, nl: ner/<lang>/test/*.txt; ro: a document of
                ner/ro/monero.conllu whose sentences all lie in the last TEST_TAIL of the file, which
                `medtrain split --by sentence --order source --ratios 0.6,0.2,0.2` puts in test), and
                screening test notes copied whole (one at scale 1); the copies carry ordinary patient ids, so
                only their text gives them away
    whitespace  another test document with newlines turned into spaces and some spaces doubled
    case        another test document upper- or lower-cased
    embedded    another test document whole, between two generated clinical notes
    patient     a new clinical note (no 13-word n-gram shared with that patient's notes) carrying the
                `patient_id` of a screening test patient: only a patient-id rule can catch it

The clean corpus is untouched: the planted lines are inserted between its lines at places drawn from a
generator of their own, so removing them gives the clean file back byte for byte, and the tokenizer is built
before they are planted.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medtrain.data.sample.generator import DOCUMENT_MAKERS
from medtrain.data.sample.shapes import COLUMN_FILES
from medtrain.data.sample.vocabulary import VOCABULARIES
from medtrain.io import atomic_open

KINDS = ("verbatim", "whitespace", "case", "embedded", "patient")
PER_KIND = 2            # planted records of each kind per clinical corpus at scale 1 (at least 1 at any scale)
SCREENING_COPIES = 1    # verbatim screening test notes per corpus at scale 1 (at least 1)
TEST_TAIL = 0.15        # ro: a document is a test document if all its sentences lie in this last share
NGRAM = 13              # a patient record shares no n-gram of this many words with that patient's notes
_MAX_TRIES = 1000       # generated notes tried per patient record (about half pass)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Planted:
    """One record to plant; `document` names the test document (or note) it was made from."""

    kind: str
    source: str
    document: str
    text: str
    patient_id: str | None = None  # kind patient: the screening test patient it belongs to


@dataclass(frozen=True)
class _Source:
    source: str
    document: str
    text: str


def clinical_patient_id(language: str, index: int) -> str:
    """An ordinary clinical record's patient: never one of the screening ids (`<lang>-00042`)."""
    return f"c-{language}-{index:05d}"


def words(text: str) -> list[str]:
    """The words the decontamination rule compares: lowercased runs of \\w."""
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def _ner_test_documents(out: Path, language: str) -> list[_Source]:
    """The test documents of a language's NER data, as decontamination sees them."""
    if language in COLUMN_FILES:
        return _ro_test_documents(out, Path("ner", language, COLUMN_FILES[language]).with_suffix(".conllu"))
    folder = Path("ner", language, "test")
    return [_Source((folder / p.name).as_posix(), p.stem, p.read_text(encoding="utf-8"))
            for p in sorted((out / folder).glob("*.txt"))]


def _ro_test_documents(out: Path, relative: Path) -> list[_Source]:
    """Documents of a CoNLL-U file whose sentences all lie in its last TEST_TAIL (in test under any split that
    gives test the last 20% of sentences in source order); text: their `# text` lines, one per line."""
    path = out / relative
    if not path.is_file():
        return []
    documents: list[tuple[str, list[int], list[str]]] = []
    sentence = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# newdoc id = "):
                documents.append((line[len("# newdoc id = "):].strip(), [], []))
            elif line.startswith("# text = ") and documents:
                documents[-1][1].append(sentence)
                documents[-1][2].append(line[len("# text = "):].rstrip("\n"))
                sentence += 1
    first = sentence - math.floor(TEST_TAIL * sentence)
    return [_Source(relative.as_posix(), name, "\n".join(texts) + "\n")
            for name, indices, texts in documents if indices and min(indices) >= first]


def _screening_test(out: Path, language: str) -> tuple[str, list[dict]]:
    relative = Path("screening", language, "test.jsonl")
    path = out / relative
    if not path.is_file():
        return relative.as_posix(), []
    with open(path, encoding="utf-8") as f:
        return relative.as_posix(), [json.loads(line) for line in f]


def _respaced(text: str, rng: random.Random) -> str:
    """Newlines become spaces (a re-export that lost the line breaks) and about a fifth of spaces double."""
    out = " ".join(line for line in text.split("\n") if line)
    return re.sub(" ", lambda _: "  " if rng.random() < 0.2 else " ", out) + "\n"


def _recased(text: str, upper: bool) -> str:
    """Lower-cased, or upper-cased but for letters whose capital lower-cases to another letter (the micro sign
    µ upper-cases to a Greek capital mu, which lower-cases to μ), so the words match after `.lower()`."""
    if not upper:
        return text.lower()
    return "".join(c.upper() if c.upper().lower() == c.lower() else c for c in text)


def _fresh_note(language: str, rng: random.Random, avoid: set[tuple[str, ...]]) -> str:
    """A generated clinical note sharing no NGRAM-word n-gram with `avoid` (the template phrases make about
    half of the candidates share one)."""
    for _ in range(_MAX_TRIES):
        text = DOCUMENT_MAKERS["clinical"](VOCABULARIES[language], rng)
        if not ngrams(text) & avoid:
            return text
    raise RuntimeError(f"no {language} clinical note free of a patient's {NGRAM}-grams in {_MAX_TRIES} tries")


def _dealt(sources: list[_Source], rng: random.Random) -> Iterator[_Source]:
    """Test documents in a shuffled order, distinct while there are enough, then round again."""
    order = rng.sample(sources, len(sources))
    while True:
        yield from order


def plan(out: Path, language: str, rng: random.Random, scale: float) -> list[Planted]:
    """The records to plant in `clinical_<language>`, from the test files already written under `out`; a kind
    whose source is missing is left out."""
    count = max(1, round(PER_KIND * scale))
    planted: list[Planted] = []
    documents = _ner_test_documents(out, language)
    if documents:
        deck, lang, make = _dealt(documents, rng), VOCABULARIES[language], DOCUMENT_MAKERS["clinical"]
        edits: dict[str, Callable[[str, int], str]] = {  # kind -> (test text, i-th of its kind) -> record text
            "verbatim": lambda text, i: text,
            "whitespace": lambda text, i: _respaced(text, rng),
            "case": lambda text, i: _recased(text, upper=i % 2 == 0),
            "embedded": lambda text, i: f"{make(lang, rng)}\n{text}{make(lang, rng)}",
        }
        for kind, edit in edits.items():
            for i in range(count):
                doc = next(deck)
                planted.append(Planted(kind, doc.source, doc.document, edit(doc.text, i)))
    source, notes = _screening_test(out, language)
    if notes:
        for note in rng.sample(notes, min(len(notes), max(1, round(SCREENING_COPIES * scale)))):
            planted.append(Planted("verbatim", source, note["note_id"], note["text"]))
        by_patient: dict[str, set[tuple[str, ...]]] = {}
        for note in notes:
            by_patient.setdefault(note["patient_id"], set()).update(ngrams(note["text"]))
        for patient in rng.sample(sorted(by_patient), min(len(by_patient), count)):
            planted.append(Planted("patient", source, patient, _fresh_note(language, rng, by_patient[patient]),
                                   patient))
    return planted


def plant(path: Path, language: str, planted: list[Planted], rng: random.Random) -> list[dict]:
    """Rewrite the clinical corpus at `path` with `planted` inserted at places drawn from `rng`, streaming, so
    the clean lines keep their bytes and order. Records that copy a note carry a fresh ordinary patient id (a
    dump's ids do not reveal a copy); patient records carry the test patient's. Returns contamination.json's
    entries, by 1-based line."""
    with open(path, encoding="utf-8") as f:
        clean = sum(1 for _ in f)
    order = rng.sample(planted, len(planted))
    lines = sorted(rng.sample(range(clean + len(order)), len(order)))
    at = dict(zip(lines, order))
    entries, fresh = [], clean
    corpus = path.stem
    with open(path, encoding="utf-8") as src, atomic_open(path, "w", encoding="utf-8") as dst:
        for line in range(clean + len(order)):
            record = at.get(line)
            if record is None:
                dst.write(next(src))
                continue
            patient_id = record.patient_id if record.kind == "patient" else clinical_patient_id(language, fresh)
            fresh += record.kind != "patient"
            dst.write(json.dumps({"text": record.text, "language": language, "domain": "clinical",
                                  "patient_id": patient_id}, ensure_ascii=False) + "\n")
            entry = {"corpus": corpus, "line": line + 1, "kind": record.kind, "source": record.source,
                     "document": record.document}
            if record.kind == "patient":
                entry["patient_id"] = record.patient_id
            entries.append(entry)
    return entries
