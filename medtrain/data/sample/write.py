"""`medtrain sample-data`: write the synthetic data set's files (see the package docstring for the layout).

Determinism: each file has its own `random.Random`, seeded by sha256 of (seed, file); no global random
state, no clocks. The same seed gives byte-identical files, tokenizer included (its vocabulary is chosen by
count, ties broken by the word: tokenizer.train_wordpiece), except prepare.yaml, which holds the OUT path.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import yaml
from tqdm import tqdm

from medtrain.data.sample.generator import DOCUMENT_MAKERS, DOMAINS, held_out_terms, ner_doc, screening_note
from medtrain.data.sample.spans import ENTITY_TYPES, brat, conll
from medtrain.data.sample.vocabulary import LANGUAGES, VOCABULARIES
from medtrain.data.tokenizer import train_wordpiece
from medtrain.errors import UserError
from medtrain.io import atomic_open, write_text_atomic

SPLITS = ("train", "dev", "test")

# Sizes at scale 1.0 (about 5 s on one core, tokenizer included); `scale` multiplies every count.
CORPUS_DOCS = 300          # per corpus; 9 corpora of mixed lengths, about 540k words in all
NER_DOCS = 60              # per language, split 60/20/20
PATIENTS = 100             # per language, split 60/20/20, each with 2-5 notes
HELDOUT_FRACTION = 0.2     # dev and test each
POSITIVE_RATE = 0.15       # screening positives per split (at least one)
VOCAB_SIZE = 8000          # the templates' vocabulary is finite, so this does not grow with scale
LONG_NOTE_WORDS = 400      # about 512 wordpieces: screening notes above this need chunking
_PROGRESS_FROM_SCALE = 5.0  # smaller runs take seconds and show no progress bar


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
    make, words = DOCUMENT_MAKERS[domain], 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for _ in range(n_docs):
            text = make(VOCABULARIES[language], rng)
            words += len(text.split())
            f.write(json.dumps({"text": text, "language": language, "domain": domain}, ensure_ascii=False) + "\n")
    return CorpusCount(f"{domain}_{language}", n_docs, words)


def _write_ner_split(folder: Path, language: str, split: str, rng: random.Random, n_docs: int) -> NerCount:
    """BRAT files in `folder` and the same documents as `folder`.conll; stale BRAT files are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in sorted([*folder.glob("*.txt"), *folder.glob("*.ann")]):
        stale.unlink()
    blocks, entities = [], 0
    lang = VOCABULARIES[language]
    exclude = frozenset() if split == "test" else held_out_terms(lang)
    for i in range(n_docs):
        doc, name = ner_doc(lang, rng, exclude), f"{language}_{split}_{i:04d}"
        write_text_atomic(folder / f"{name}.txt", doc.text)
        write_text_atomic(folder / f"{name}.ann", brat(doc))
        blocks.append(conll(doc))
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
                text = screening_note(VOCABULARIES[language], rng, bool(label))
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

