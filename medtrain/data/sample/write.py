"""`medtrain sample-data`: write the synthetic data set's files (see the package docstring for the layout).

Determinism: each file has its own `random.Random`, seeded by sha256 of (seed, file); no global random
state, no clocks. The same seed gives byte-identical files, tokenizer included (its vocabulary is chosen by
count, ties broken by the string: tokenizer.train_wordpiece), except prepare.yaml, which holds the OUT path.
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

from medtrain.data.sample import contamination
from medtrain.data.sample.generator import DOCUMENT_MAKERS, DOMAINS, ner_doc, screening_note
from medtrain.data.sample.shapes import (
    COLUMN_FILES, SLIPPED_DOCUMENT, MoneroCount, brat_ann, monero, pharmaconer_slips, type_namer, written_types,
)
from medtrain.data.sample.spans import Phrase, conll
from medtrain.data.sample.ud import monero_conllu
from medtrain.data.sample.vocabulary import LANGUAGES, VOCABULARIES
from medtrain.data.tokenizer import train_wordpiece
from medtrain.errors import UserError
from medtrain.io import atomic_open, write_json_atomic, write_text_atomic

SPLITS = ("train", "dev", "test")

# Sizes at scale 1.0 (about 5 s on one core, tokenizer included); `scale` multiplies every count.
CORPUS_DOCS = 300          # per corpus; 9 corpora of mixed lengths, about 540k words in all
NER_DOCS = 60              # per language, split 60/20/20
PATIENTS = 100             # per language: 60 train, 20 dev, 80 test (SCREENING_TEST_FRACTION), each with 2-5 notes
HELDOUT_FRACTION = 0.2     # dev and test each
SCREENING_TEST_FRACTION = 0.8  # screening's test split, beside train and dev's 0.6 and 0.2: AUROC over 9 positive
                               # patients (the demo's scale at 0.2) swung by +-0.1 with the sample drawn; 36 give
                               # an interval that the pretraining's rounding does not move across 0
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
    split: str                  # or the column file's name, for a language written unsplit
    documents: int
    entities: int
    detail: str = ""            # what else the summary line says


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


def _split_sizes(total: int, test_fraction: float = HELDOUT_FRACTION) -> dict[str, int]:
    """Train/dev/test sizes; each at least 1 so every split file exists. A larger test fraction adds test items
    and leaves train and dev as they were."""
    heldout = max(1, round(total * HELDOUT_FRACTION))
    return {"train": max(1, total - 2 * heldout), "dev": heldout, "test": max(1, round(total * test_fraction))}


def _write_corpus(path: Path, language: str, domain: str, rng: random.Random, n_docs: int) -> CorpusCount:
    """A clinical record also names its patient, as a hospital dump does (contamination.clinical_patient_id)."""
    make, words = DOCUMENT_MAKERS[domain], 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            text = make(VOCABULARIES[language], rng)
            words += len(text.split())
            record = {"text": text, "language": language, "domain": domain}
            if domain == "clinical":
                record["patient_id"] = contamination.clinical_patient_id(language, i)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return CorpusCount(f"{domain}_{language}", n_docs, words)


def _write_ner_split(folder: Path, language: str, split: str, rng: random.Random, n_docs: int,
                     slips: tuple[int, random.Random] | None = None) -> NerCount:
    """BRAT files in `folder` and the same documents as `folder`.conll; stale BRAT files are removed.
    `slips` (document index, its generator): that document's .ann gets PharmaCoNER's offset slips, its .conll
    stays clean."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in sorted([*folder.glob("*.txt"), *folder.glob("*.ann")]):
        stale.unlink()
    blocks, entities, detail = [], 0, ""
    lang, type_name = VOCABULARIES[language], type_namer(language)
    for i in range(n_docs):
        doc, name = ner_doc(lang, rng, split == "test"), f"{language}_{split}_{i:04d}"
        ann = brat_ann(language, doc)
        if slips is not None and i == slips[0]:
            ann, slipped = pharmaconer_slips(ann, doc.text, slips[1])
            detail = f"{name}.ann slips: " + ", ".join(f"{s.t_id} {s.written - s.start:+d}" for s in slipped)
        write_text_atomic(folder / f"{name}.txt", doc.text)
        write_text_atomic(folder / f"{name}.ann", ann)
        blocks.append(conll(doc, type_name))
        entities += len(doc.entities)
    write_text_atomic(folder.with_suffix(".conll"), "".join(blocks))
    return NerCount(language, split, n_docs, entities, detail)


def _write_column_file(path: Path, language: str, seed: int, sizes: dict[str, int]) -> list[NerCount]:
    """One unsplit MoNERo-style file holding a train, dev and test split's documents, in that order and from the
    seeds a BRAT language's splits use: the first three fifths never use the held-out terms and the last fifth
    does, so those terms are rare in any split `medtrain split` cuts from it. The same documents also go to
    `path`.conllu, as Universal Dependencies publishes MoNERo (ud.py), its empty nodes from a generator of its own."""
    lang, short_rng = VOCABULARIES[language], _rng(seed, "ner", language, path.name, "short lines")
    blocks, counts, docs = [], [], []
    for split in SPLITS:
        rng = _rng(seed, "ner", language, split)
        for _ in range(sizes[split]):
            doc = ner_doc(lang, rng, split == "test")
            block, count = monero(doc, short_rng)
            blocks.append(block)
            counts.append(count)
            docs.append(doc)
    write_text_atomic(path, "".join(blocks))
    total = MoneroCount(*(sum(column) for column in zip(*counts)))
    ud_path = path.with_suffix(".conllu")
    named: list[tuple[str, Phrase]] = [(f"{language}_{i:04d}", doc) for i, doc in enumerate(docs)]
    text, ud = monero_conllu(named, _rng(seed, "ner", language, ud_path.name, "empty nodes"))
    write_text_atomic(ud_path, text)
    return [NerCount(language, path.name, len(counts), total.entities,
                     f"{total.sentences} sentences, {total.discontinuous} discontinuous, "
                     f"{total.short_lines} two-column lines"),
            NerCount(language, ud_path.name, len(counts), total.entities,
                     f"{ud.sentences} sentences, {ud.multiword_tokens} multiword tokens, {ud.empty_nodes} empty nodes")]


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


def _corpus_texts(out: Path, domains: Sequence[str] = DOMAINS) -> Iterator[str]:
    """Stream the corpora back for tokenizer training, so memory stays flat at any scale."""
    for domain in domains:
        for language in LANGUAGES:
            with open(out / "corpora" / f"{domain}_{language}.jsonl", encoding="utf-8") as f:
                yield from (json.loads(line)["text"] for line in f)


def _write_tokenizer(out: Path) -> int:
    """Build into a temporary folder, then swap it in, so a kill never leaves a half-written tokenizer.

    Like multilingual BERT on medical text: the general corpora's words and the commoner 60% of the clinical and
    biomedical ones are whole, and the rarer domain terms split into a few fragments (train_wordpiece's
    whole_word_texts and common_share), so fertility differs by domain. Splitting every domain word instead
    (fertility ~1.9 on clinical text) halves what a short fine-tuning window holds and erases the gain that
    domain pretraining brings on NER in the demo (+0.007 [-0.021, +0.036] exact-offset F1 on ner-ro).
    Returns the vocabulary size, which stays below VOCAB_SIZE when the corpora have fewer distinct fragments.
    """
    final, tmp = out / "tokenizer", out / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vocab_size = len(train_wordpiece(_corpus_texts(out), tmp, vocab_size=VOCAB_SIZE,
                                     whole_word_texts=_corpus_texts(out, ("general",)), common_share=0.6))
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
    lines += ["# the evaluation data kept out of the shards (the clinical corpora hold copies of it: contamination.json);",
              "# MoNERo whole, as the sample does not split it (`medtrain split` does)",
              "exclude:", "  sources:"]
    for language in ("es", "nl"):
        lines += [f"    - {out / 'ner' / language / split}" for split in ("dev", "test")]
    lines.append(f"    - {{path: {out / 'ner' / 'ro' / 'monero.conllu'}, columns: {{tag: 'misc:BioNERLabel'}}}}")
    for language in LANGUAGES:
        lines += [f"    - {out / 'screening' / language / f'{split}.jsonl'}" for split in ("dev", "test")]
    lines.append("  by: [patient_id]")
    write_text_atomic(out / "prepare.yaml", "\n".join(lines) + "\n")


def _annotation_conf(language: str) -> str:
    """Lets the brat annotation tool open ner/<lang>/ as a collection with that corpus's types."""
    entities = "".join(f"{t}\n" for t in written_types(language))
    return f"[entities]\n{entities}[relations]\n[events]\n[attributes]\n"


_README = """\
# Synthetic clinical-style sample data (nl, ro, es)

Everything here is synthetic: generated by `medtrain sample-data` from templates and word lists written for
medtrain. No text comes from real patients or real clinical notes. The same seed gives the same bytes.

- `corpora/<domain>_<lang>.jsonl`: pretraining text, one `{"text", "language", "domain"}` object per line;
  domains `clinical` (discharge letters, progress notes), `biomedical` (abstracts), `general` (news, weather,
  sports, cooking). Clinical records also carry a `patient_id` (`c-<lang>-00042`: never a screening patient).
- Planted contamination, as real hospital dumps have it: besides its generated notes, each clinical corpus holds
  a few records (about 11 at scale 1, more with `--scale`) that `medtrain prepare`'s `exclude:` section should
  remove before pretraining: NER test documents copied verbatim (es, nl: `ner/<lang>/test/*.txt`; ro: documents
  of `monero.conllu` in the last 15% of its sentences, which `medtrain split --by sentence --order source
  --ratios 0.6,0.2,0.2` puts in test), copies with other whitespace or case, test documents pasted whole into a
  longer note, screening test notes copied verbatim (one at scale 1), and new notes (sharing no 13-word run with that
  patient's notes) of screening test patients, under their `patient_id`, which only a patient-id rule catches.
  The copies carry ordinary patient ids. `contamination.json` lists each planted record (corpus, 1-based line,
  kind verbatim|whitespace|case|embedded|patient, source file, document or note, and the patient for kind
  patient; no text). Removing those lines gives the clean corpus, which the tokenizer is built from;
  `medtrain sample-data --clean` writes the clean corpora and no contamination.json.
- NER: one generator for the three languages, written in the shapes of three real corpora, each with its own
  entity types, so a cross-lingual study must map them to one shared space (study-demo's `labels:`):
  - `ner/ro/monero.tsv` imitates MoNERo (Romanian biomedical NER): one file, no train/dev/test split
    (`medtrain split` makes one), tab-separated `token lemma tag POS`, blank lines between sentences, no
    `-DOCSTART-`; BIO tags of ANAT, CHEM, DISO, PROC. Flat: nested entities are lost (the longer entity wins); a
    discontinuous entity's later part starts with a bare `I-` after the gap (read it with `discontinuous: join`).
    About 0.5% of the lines outside entities have two columns only (`token lemma`), like the real file's few
    corrupt lines (read with `short_lines: skip`). The lemma is the token lowercased and POS a placeholder
    (PUNCT, NUM, X). Half of the entity terms occur only in the last fifth of its documents, where most entity
    mentions name one of them.
  - `ner/ro/monero.conllu` holds the same documents, sentences, tokens and tags as MoNERo is published in
    Universal Dependencies (UD_Romanian-SiMoNERo): CoNLL-U with `# newdoc id`, `# sent_id` and `# text` (the
    sentence as written, which the FORMs and `SpaceAfter=No` rebuild), the tag as `BioNERLabel=B-DISO` inside
    MISC (no key: O), a few multiword token ranges (`1-3 S-a`, whose words carry the tags) and empty nodes
    (`5.1`), which are not tokens. Read it with `format: conllu`, `columns: {tag: misc:BioNERLabel}`,
    `discontinuous: join`. It has none of the TSV's two-column lines. LEMMA, UPOS and the dependency tree are
    placeholders.
  - `ner/es/<split>/*.txt|*.ann` imitates PharmaCoNER's BRAT: drugs are NORMALIZABLES, or NO_NORMALIZABLES for a
    fixed fifth of the drug terms, each with a `#` AnnotatorNotes line (a made-up SNOMED-like code, `<null>` for
    NO_NORMALIZABLES) and some with an `N` Reference line. Real PharmaCoNER has chemical and protein types only:
    ENFERMEDAD, SINTOMA, PROCEDIMIENTO and ANATOMIA stand in for CANTEMIST/DisTEMIST-style releases.
    Like the PharmaCoNER 2019 release (five annotations of one document start one or two characters late), one
    document has slips: in `ner/es/train/es_train_0000.ann` three entity lines give offsets one or two
    characters late and one gives offsets far from its text, the annotated text itself unchanged (the summary
    names them). Read it with the default `offset_mismatch: repair`, which moves the three late ones back
    (their text is within `repair_window`, 8 characters) and skips the far one; `ner/es/train.conll` has the
    document clean.
  - `ner/nl/<split>/*.txt|*.ann`: BRAT with Dutch types: Aandoening, Symptoom, Medicatie, Verrichting, Anatomie.
  The BRAT files have nested and a few discontinuous entities; `ner/<lang>/<split>.conll` (es, nl) holds the
  same documents in IOB2 with `-DOCSTART-`, discontinuous entities split into fragments and overlaps resolved to
  the longest span. `ner/<lang>/annotation.conf` lets the brat tool open a language's folder. Half of the entity
  terms never occur in the es and nl train and dev splits, only in test (and in the corpora), and most test
  mentions name one of them: what a small annotated set lacks and domain pretraining can teach.
- `screening/<lang>/<split>.jsonl`: `{"patient_id", "note_id", "text", "label"}`, 2-5 notes per patient, the
  patient's label (heart failure, about 15% positive) repeated on each note; many notes exceed 512 wordpieces.
- `tokenizer/`: a WordPiece tokenizer built from the clean corpora (`AutoTokenizer.from_pretrained`): like multilingual
  BERT on medical text, general words are whole and clinical and biomedical terms split into a few pieces.
- `prepare.yaml`: a ready config for `medtrain prepare` listing the nine corpora, with an `exclude` section that
  keeps the NER and screening dev and test sets (and all of MoNERo) out of the shards.
"""


def _summary(out: Path, seed: int, scale: float, corpora: Sequence[CorpusCount], ner: Sequence[NerCount],
             screening: Sequence[ScreeningCount], vocab_size: int, planted: dict[str, list[dict]]) -> str:
    """Counts only, never note text."""
    lines = [f"synthetic nl/ro/es sample data (seed {seed}, scale {scale:g}) in {out}",
             "corpora (documents, whitespace words):"]
    lines += [f"  {c.name:<16} {c.documents:>6} docs {c.words:>10,} words" for c in corpora]
    lines.append(f"  {'total':<16} {sum(c.documents for c in corpora):>6} docs "
                 f"{sum(c.words for c in corpora):>10,} words")
    lines.append("ner (documents, entities):")
    lines += [f"  {n.language} {n.split:<5} {n.documents:>5} docs {n.entities:>7} entities"
              + (f" ({n.detail})" if n.detail else "") for n in ner]
    lines.append(f"screening (patients, notes, positive patients, notes > {LONG_NOTE_WORDS} words):")
    lines += [f"  {s.language} {s.split:<5} {s.patients:>5} patients {s.notes:>6} notes "
              f"{s.positives / s.patients:>6.1%} positive {s.long_notes / s.notes:>6.1%} long" for s in screening]
    if planted:
        lines.append("planted contamination (records added to the clean corpus; where: contamination.json):")
        lines += [f"  {corpus:<16} {len(entries):>6} records ("
                  + ", ".join(f"{n} {kind}" for kind in contamination.KINDS
                              if (n := sum(e['kind'] == kind for e in entries))) + ")"
                  for corpus, entries in planted.items()]
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


def _write_ner(out: Path, language: str, seed: int, sizes: dict[str, int]) -> list[NerCount]:
    """A BRAT language's three splits, or a column language's one file (shapes.COLUMN_FILES) and its CoNLL-U."""
    folder = out / "ner" / language
    if language in COLUMN_FILES:
        return _write_column_file(folder / COLUMN_FILES[language], language, seed, sizes)
    slipped_language, slipped_split, index = SLIPPED_DOCUMENT
    counts = [_write_ner_split(folder / split, language, split, _rng(seed, "ner", language, split), sizes[split],
                               (index, _rng(seed, "ner", language, split, "slips"))
                               if (language, split) == (slipped_language, slipped_split) else None)
              for split in SPLITS]
    write_text_atomic(folder / "annotation.conf", _annotation_conf(language))
    return counts


def _write_tasks(out: Path, seed: int, scale: float, bar: tqdm) -> tuple[list[NerCount], list[ScreeningCount]]:
    """NER and screening splits; patient ids run on across splits, so no patient is in two splits."""
    ner, screening = [], []
    for language in LANGUAGES:
        patient_sizes, first_id = _split_sizes(_scaled(PATIENTS, scale), SCREENING_TEST_FRACTION), 0
        ner += _write_ner(out, language, seed, _split_sizes(_scaled(NER_DOCS, scale)))
        bar.update()
        for split in SPLITS:
            screening.append(_write_screening_split(out / "screening" / language / f"{split}.jsonl", language, split,
                                                    _rng(seed, "screening", language, split), patient_sizes[split],
                                                    first_id))
            first_id += patient_sizes[split]
            bar.update()
    return ner, screening


def _contaminate(out: Path, seed: int, scale: float, bar: tqdm) -> dict[str, list[dict]]:
    """Plant test documents and test patients' notes in each clinical corpus (contamination.py), after the
    tokenizer is built from the clean corpora; returns contamination.json's content, by corpus."""
    planted = {}
    for language in LANGUAGES:
        rng = _rng(seed, "contamination", language)
        records = contamination.plan(out, language, rng, scale)
        planted[f"clinical_{language}"] = contamination.plant(out / "corpora" / f"clinical_{language}.jsonl",
                                                              language, records, rng)
        bar.update()
    return planted


def write_sample_data(out: Path, seed: int = 0, scale: float = 1.0, contaminate: bool = True) -> str:
    """Write the whole synthetic data set under `out` (see the module docstring) and return a summary.
    `contaminate=False` (`--clean`) plants nothing in the clinical corpora and writes no contamination.json."""
    if not scale > 0:
        raise UserError(f"--scale must be a positive number, got {scale}")
    out = Path(out)
    steps = len(DOMAINS) * len(LANGUAGES) + len(LANGUAGES) * (1 + len(SPLITS)) + 1 + contaminate * len(LANGUAGES)
    planted: dict[str, list[dict]] = {}
    with tqdm(total=steps, desc="sample-data", unit="file", disable=scale < _PROGRESS_FROM_SCALE) as bar:
        corpora = _write_corpora(out, seed, scale, bar)
        ner, screening = _write_tasks(out, seed, scale, bar)
        vocab_size = _write_tokenizer(out)
        bar.update()
        if contaminate:
            planted = _contaminate(out, seed, scale, bar)
    if contaminate:
        write_json_atomic(out / "contamination.json", planted)
    else:
        (out / "contamination.json").unlink(missing_ok=True)  # a stale one would name lines that are not there
    _write_prepare_config(out)
    write_text_atomic(out / "README.md", _README)
    return _summary(out, seed, scale, corpora, ner, screening, vocab_size, planted)

