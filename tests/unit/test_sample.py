"""The bundled synthetic data set: deterministic, well-formed BRAT/CoNLL, NER in three real corpora's shapes
(MoNERo columns and CoNLL-U for ro, PharmaCoNER-style BRAT for es, BRAT with Dutch types for nl), screening that
is learnable but not trivial.

The CoNLL checks rebuild IOB2 from the .txt and .ann files with code of their own (character painting rather
than the generator's interval test), under the policy in `medtrain.data.sample.spans`'s docstring. The MoNERo
file is read back with medtrain's column reader and checked against the shape by code of its own; its CoNLL-U
twin is parsed with the `conllu` package, not medtrain's reader, and compared with it token by token. The one es
document with PharmaCoNER's offset slips is compared with its clean .ann, made again from the generator. The
planted contamination of the clinical corpora is checked against its sources as contamination.json names them,
the ro test documents against a real `medtrain split` of monero.conllu.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

import conllu
import pytest
import yaml

from medtrain.data.ner import read_ner, read_ner_corpus
from medtrain.data.ner_format import ColumnFormat
from medtrain.data.sample import DOMAINS, ENTITY_TYPES, LANGUAGES, SPLITS, write_sample_data
from medtrain.data.sample.generator import held_out_terms, ner_doc
from medtrain.data.sample.shapes import LATE_SLIPS, SLIP_WINDOW, brat_ann
from medtrain.data.sample.spans import Phrase
from medtrain.data.sample.vocabulary import COMMON_WORDS, NUMBERS, VOCABULARIES
from medtrain.data.sample.write import _rng
from medtrain.data.split import split_corpus
from medtrain.errors import UserError

WORD = re.compile(r"\w+|[^\w\s]")
PLANTED_KINDS = {"verbatim", "whitespace", "case", "embedded", "patient"}
Fragments = list[tuple[int, int]]
BRAT_LANGUAGES = ("nl", "es")
# written type -> rank of its latent type in ENTITY_TYPES (DISEASE, DRUG, PROCEDURE, SYMPTOM, ANATOMY): the
# CoNLL policy breaks ties by it
TYPE_RANK = {
    "nl": {"Aandoening": 0, "Medicatie": 1, "Verrichting": 2, "Symptoom": 3, "Anatomie": 4},
    "es": {"ENFERMEDAD": 0, "NORMALIZABLES": 1, "NO_NORMALIZABLES": 1, "PROCEDIMIENTO": 2, "SINTOMA": 3,
           "ANATOMIA": 4},
}
MONERO_TYPES = {"ANAT", "CHEM", "DISO", "PROC"}
MONERO = ColumnFormat(token=0, tag=2, separator="tab", short_lines="skip", discontinuous="join")
MONERO_TSV = ColumnFormat(tag=2, separator="tab", document_marker=None, short_lines="skip", discontinuous="join")
MONERO_UD = ColumnFormat(tag="misc:BioNERLabel", discontinuous="join")
SLIPPED = Path("ner", "es", "train", "es_train_0000.ann")  # PharmaCoNER's slips; every other .ann is exact
# Recorded from the generator before the NER shapes changed (seed 0, scale 1): the corpora (less the planted
# records and the clinical patient_id, which came later) are the same bytes. The screening training and dev
# records and the es/nl NER training and dev files were recorded before the test splits changed (a larger
# screening test split, SCREENING_TEST_FRACTION; NER test documents favouring held-out terms, TEST_HELD_OUT_RATE).
BEFORE = {"corpora": "84b86589d09c7790a6c5d8bdd6e6b4003a4faf51d51d54dbfcd6d5706f02d51b",
          "screening_train_dev": "42975d3d145ea6d5075e54c5a5012b795bccc849357e7c556f7e8e61a6a9e26f",
          "ner_train_dev_text": "2f4b95e6b2425563d544ce8386726a70cf900acd52e55adabb2bb368a446ca6b",
          # their .txt, .ann (but the slipped one) and .conll files
          "ner_train_dev_files": "df5864fe97ced86fe38e8c0761ba3ad8438dcadcd025635ea1d2d99c5da422df"}


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "data"
    write_sample_data(out, seed=0, scale=1.0)
    return out


# ----------------------------------------------------------------------------- readers written for the tests


def language_of(path: Path) -> str:
    return path.relative_to(path.parents[2]).parts[0]  # ner/<lang>/<split>/<doc>.ann


def read_ann(path: Path, ann: str | None = None) -> list[tuple[str, Fragments, str]]:
    """The T lines (entities) of `path`, or of `ann` written for it; # notes and N references are checked by the
    PharmaCoNER test."""
    entities = []
    for line in (path.read_text(encoding="utf-8") if ann is None else ann).splitlines():
        tid, middle, surface = line.split("\t")
        if tid[0] in "#N":
            continue
        label, offsets = middle.split(" ", 1)
        fragments = [(int(s), int(e)) for s, e in (part.split() for part in offsets.split(";"))]
        assert tid.startswith("T") and label in TYPE_RANK[language_of(path)], line
        entities.append((label, fragments, surface))
    return entities


def read_conll(path: Path) -> list[list[list[tuple[str, str]]]]:
    """Documents -> sentences -> (token, tag)."""
    docs: list[list[list[tuple[str, str]]]] = []
    sentence: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("-DOCSTART-"):
            docs.append([])
        elif line:
            token, tag = line.split("\t")
            sentence.append((token, tag))
        elif sentence:
            docs[-1].append(sentence)
            sentence = []
    return docs


def expected_iob2(text: str, entities: list[tuple[str, Fragments, str]],
                  rank: dict[str, int]) -> list[list[tuple[str, str]]]:
    """Fragments become entities; longer beats shorter, whole beats fragment, earlier start, then type order."""
    candidates = [(e - s, len(frags) > 1, s, rank[label], e, label)
                  for label, frags, _ in entities for s, e in frags]
    owner: list[tuple[str, int] | None] = [None] * len(text)
    for length, _, start, _, end, label in sorted(candidates, key=lambda c: (-c[0], c[1], c[2], c[3])):
        if all(owner[i] is None for i in range(start, end)):
            owner[start:end] = [(label, start)] * length
    sentences, offset = [], 0
    for line in text.split("\n"):
        tokens = []
        for match in WORD.finditer(line):
            held = owner[offset + match.start()]
            tag = "O" if held is None else ("B-" if held[1] == offset + match.start() else "I-") + held[0]
            tokens.append((match.group(), tag))
        if tokens:
            sentences.append(tokens)
        offset += len(line) + 1
    return sentences


def screening(root: Path, language: str, split: str) -> list[dict]:
    path = root / "screening" / language / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def digest(root: Path, paths: list[Path]) -> str:
    return digest_files({path.relative_to(root).as_posix(): path.read_bytes() for path in paths})


def digest_files(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files, key=lambda name: Path(name).parts):  # the order sorted() gave the paths
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    return h.hexdigest()


def planted(root: Path) -> dict[str, list[dict]]:
    """contamination.json: corpus -> its planted records."""
    return json.loads((root / "contamination.json").read_text(encoding="utf-8"))


def corpus_lines(root: Path, name: str) -> list[str]:
    return (root / "corpora" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def clean_lines(root: Path, name: str) -> list[str]:
    """A corpus's lines less those contamination.json names."""
    lines = {entry["line"] for entry in planted(root).get(name, [])} if (root / "contamination.json").exists() \
        else set()
    return [line for i, line in enumerate(corpus_lines(root, name), 1) if i not in lines]


def without_patient_id(line: str) -> bytes:
    """The line as written before clinical records named their patient."""
    record = json.loads(line)
    record.pop("patient_id", None)
    return (json.dumps(record, ensure_ascii=False) + "\n").encode()


def normalised(text: str) -> list[str]:
    """What a whitespace or case edit leaves alone: lowercased runs of \\w."""
    return re.findall(r"\w+", text.lower())


def ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    words = normalised(text)
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def clean_slipped_ann() -> tuple[Phrase, str]:
    """es_train_0000 as the generator made it (seed 0), and its .ann before the slips."""
    lang = VOCABULARIES["es"]
    doc = ner_doc(lang, _rng(0, "ner", "es", "train"), test=False)
    return doc, brat_ann("es", doc)


def rebuilt_text(sentence: conllu.TokenList) -> str:
    """The sentence from its tokens: a multiword token's FORM stands for its words; empty nodes are no tokens."""
    surface: list[tuple[str, bool]] = []
    covered = 0
    for token in sentence:
        token_id = token["id"]
        if isinstance(token_id, tuple) and token_id[1] == ".":
            continue
        if isinstance(token_id, tuple):
            covered = token_id[2]
        elif token_id <= covered:
            continue
        surface.append((token["form"], (token["misc"] or {}).get("SpaceAfter") != "No"))
    return "".join(form + (" " if space and i < len(surface) - 1 else "") for i, (form, space) in enumerate(surface))


def ud_words(sentence: conllu.TokenList) -> list[tuple[str, str]]:
    """(FORM, tag) of the syntactic words: no range lines, no empty nodes; no BioNERLabel is O."""
    return [(t["form"], (t["misc"] or {}).get("BioNERLabel", "O")) for t in sentence if isinstance(t["id"], int)]


def column_sentences(path: Path) -> list[list[list[str]]]:
    """Sentences of a column file -> lines -> columns."""
    sentences: list[list[list[str]]] = [[]]
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line:
            sentences[-1].append(line.split("\t"))
        elif sentences[-1]:
            sentences.append([])
    return [s for s in sentences if s]


# ----------------------------------------------------------------------------- tests


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    summary = write_sample_data(Path("run_one"), seed=7, scale=0.2)
    write_sample_data(Path("run_two"), seed=7, scale=0.2)
    write_sample_data(Path("run_other"), seed=8, scale=0.2)
    one, two, other = all_files(Path("run_one")), all_files(Path("run_two")), all_files(Path("run_other"))
    assert one.keys() == two.keys() == other.keys()
    assert [name for name in one if name != "prepare.yaml" and one[name] != two[name]] == []
    assert one["prepare.yaml"].replace(b"run_one", b"run_two") == two["prepare.yaml"]
    assert one["corpora/clinical_nl.jsonl"] != other["corpora/clinical_nl.jsonl"]
    assert one["screening/nl/train.jsonl"] != other["screening/nl/train.jsonl"]
    assert "clinical_nl" in summary and "positive" in summary

    config = yaml.safe_load(Path("run_one/prepare.yaml").read_text(encoding="utf-8"))
    assert config["tokenizer"] == str(Path("run_one") / "tokenizer")  # relative OUT -> relative paths
    assert [c["name"] for c in config["corpora"]] == [f"{d}_{lang}" for d in DOMAINS for lang in LANGUAGES]
    assert all(Path(c["path"]).is_file() for c in config["corpora"])


def test_scale_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="scale"):
        write_sample_data(tmp_path, scale=0)


def test_corpora_lines_have_text_language_domain(sample: Path) -> None:
    for domain in DOMAINS:
        for language in LANGUAGES:
            lines = (sample / "corpora" / f"{domain}_{language}.jsonl").read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines]
            assert len(records) >= 200
            keys = {"text", "language", "domain"} | ({"patient_id"} if domain == "clinical" else set())
            assert all(r.keys() == keys for r in records)
            assert {(r["language"], r["domain"]) for r in records} == {(language, domain)}
            words = [len(r["text"].split()) for r in records]
            assert max(words) > 300 and min(words) < 100, (domain, language)


def test_language_specific_letters(sample: Path) -> None:
    def text(domain: str, language: str) -> str:
        return (sample / "corpora" / f"{domain}_{language}.jsonl").read_text(encoding="utf-8")

    romanian = text("clinical", "ro") + text("general", "ro")
    assert set("ăâîșțĂÂÎȘȚ") & set(romanian) >= set("ăâîșț")
    assert not set("şţŞŢ") & set(romanian), "Romanian needs comma-below ș ț, not cedilla ş ţ"
    assert set("áéíóúñ") <= set(text("clinical", "es") + text("general", "es"))
    assert "ë" in text("clinical", "nl") or "é" in text("clinical", "nl")


def test_tokenizer_loads_and_round_trips_romanian(sample: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(sample / "tokenizer"))
    assert 1000 < len(tokenizer) <= 8000
    for word in ("insuficiență", "vârstă", "Timișoara"):
        ids = tokenizer.encode(word, add_special_tokens=False)
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == word


def test_tokenizer_keeps_general_words_whole_and_splits_domain_words(sample: Path) -> None:
    """Like mBERT on medical text: subwords per word 1 on general text, above it on biomedical text and higher
    still on clinical text, where a rarer word unseen in the general corpora takes a few pieces, not one per
    letter. Measured on the clean corpora it is built from: the planted upper-cased copies split finely."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(sample / "tokenizer"))
    lines = {(domain, language): clean_lines(sample, f"{domain}_{language}")  # what it was built from
             for domain in DOMAINS for language in LANGUAGES}
    words = {key: [w for line in text for w in re.findall(r"\w+", json.loads(line)["text"])]
             for key, text in lines.items()}
    general = {w for (domain, _), ws in words.items() if domain == "general" for w in ws}
    fertility = {key: len(tokenizer(ws, is_split_into_words=True, add_special_tokens=False)["input_ids"]) / len(ws)
                 for key, ws in words.items()}
    for language in LANGUAGES:
        plain, biomedical, clinical = (fertility[domain, language] for domain in ("general", "biomedical", "clinical"))
        assert plain <= 1.01 and 1.005 <= biomedical < clinical and clinical >= 1.03, (language, fertility)
    domain_only = {w for ws in words.values() for w in ws} - general
    sizes = Counter(len(tokenizer.tokenize(w)) for w in domain_only)
    split = sizes.total() - sizes[1]
    assert split >= 0.3 * sizes.total(), sizes  # the rarer domain words split ...
    assert sum(n for size, n in sizes.items() if 2 <= size <= 5) >= 0.9 * split, sizes  # ... into a few pieces


def test_brat_offsets_match_text_and_token_boundaries(sample: Path) -> None:
    """Every .ann but the slipped one exactly; that one's clean version (its slips: test_es_has_pharmaconer_slips)."""
    for ann in sorted((sample / "ner").glob("*/*/*.ann")):
        text = ann.with_suffix(".txt").read_text(encoding="utf-8")
        starts = {m.start() for m in WORD.finditer(text)}
        ends = {m.end() for m in WORD.finditer(text)}
        clean = clean_slipped_ann()[1] if ann == sample / SLIPPED else None
        for label, fragments, surface in read_ann(ann, clean):
            assert " ".join(text[s:e] for s, e in fragments) == surface, (ann.name, surface)
            assert all(s < e for s, e in fragments) and fragments == sorted(fragments)
            assert all("\n" not in text[s:e] and s in starts and e in ends for s, e in fragments), (ann.name, surface)


def test_nested_and_discontinuous_spans_occur(sample: Path) -> None:
    for language in BRAT_LANGUAGES:
        nested = discontinuous = total = 0
        for ann in sorted((sample / "ner" / language).glob("*/*.ann")):
            entities = read_ann(ann)
            total += len(entities)
            discontinuous += sum(len(frags) > 1 for _, frags, _ in entities)
            spans = [(label, frags[0]) for label, frags, _ in entities if len(frags) == 1]
            nested += sum(a != b and b[1][0] <= a[1][0] and a[1][1] <= b[1][1] and a[0] != b[0]
                          for a in spans for b in spans)
        assert nested >= 20, language
        assert 5 <= discontinuous <= 0.1 * total, language


def test_conll_agrees_with_brat_under_the_policy(sample: Path) -> None:
    for language in BRAT_LANGUAGES:
        for split in SPLITS:
            folder = sample / "ner" / language / split
            clean = {sample / SLIPPED: clean_slipped_ann()[1]}  # the .conll has the slipped document clean
            expected = [expected_iob2(txt.read_text(encoding="utf-8"),
                                      read_ann(txt.with_suffix(".ann"), clean.get(txt.with_suffix(".ann"))),
                                      TYPE_RANK[language]) for txt in sorted(folder.glob("*.txt"))]
            assert len(expected) >= 5
            assert read_conll(folder.with_suffix(".conll")) == expected, (language, split)


def test_conll_is_valid_iob2(sample: Path) -> None:
    for language in BRAT_LANGUAGES:
        tags_seen = set()
        for conll in sorted((sample / "ner" / language).glob("*.conll")):
            for doc in read_conll(conll):
                for sentence in doc:
                    previous = "O"
                    for _, tag in sentence:
                        assert tag == "O" or tag[:2] in ("B-", "I-") and tag[2:] in TYPE_RANK[language], tag
                        if tag.startswith("I-"):
                            assert previous[2:] == tag[2:], (conll.name, sentence)
                        previous = tag
                        tags_seen.add(tag)
        assert {f"B-{t}" for t in TYPE_RANK[language]} <= tags_seen, language


def test_screening_patients_notes_and_rates(sample: Path) -> None:
    for language in LANGUAGES:
        patients: dict[str, set[int]] = {}
        notes_per_patient: dict[str, int] = {}
        long_notes = notes = 0
        for split in SPLITS:
            records = screening(sample, language, split)
            assert all(r.keys() == {"patient_id", "note_id", "text", "label"} for r in records)
            split_patients = {r["patient_id"] for r in records}
            assert not split_patients & patients.keys(), "a patient in two splits"
            for r in records:
                patients.setdefault(r["patient_id"], set()).add(r["label"])
                notes_per_patient[r["patient_id"]] = notes_per_patient.get(r["patient_id"], 0) + 1
                long_notes += len(r["text"].split()) > 400
                notes += 1
        assert all(len(labels) == 1 for labels in patients.values()), "label must be per patient"
        assert all(2 <= n <= 5 for n in notes_per_patient.values())
        positive_rate = sum(labels == {1} for labels in patients.values()) / len(patients)
        assert 0.10 <= positive_rate <= 0.20, (language, positive_rate)
        assert long_notes / notes >= 0.3, (language, long_notes / notes)


def test_screening_label_learnable_but_not_one_keyword(sample: Path) -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    for language in LANGUAGES:
        train, test = screening(sample, language, "train"), screening(sample, language, "test")
        vectorizer = CountVectorizer(binary=True, token_pattern=r"(?u)\b\w+\b")
        model = LogisticRegression(max_iter=2000).fit(vectorizer.fit_transform([r["text"] for r in train]),
                                                      [r["label"] for r in train])
        labels = [r["label"] for r in test]
        scores = model.decision_function(vectorizer.transform([r["text"] for r in test]))
        assert roc_auc_score(labels, scores) > 0.75, language

        words = [{w.lower() for w in WORD.findall(r["text"])} for r in test]
        best = max(sum((w in ws) == bool(y) for ws, y in zip(words, labels)) for w in set().union(*words))
        assert best < len(test), f"{language}: one keyword separates the classes"


def test_held_out_terms_are_in_ner_test_and_corpora_only(sample: Path) -> None:
    """Half of the entity terms are never annotated in NER training or dev, yet occur in the test split and
    in the clinical corpus: the words domain pretraining can teach and fine-tuning cannot."""
    for language in BRAT_LANGUAGES:
        held_out = held_out_terms(VOCABULARIES[language])
        assert held_out
        mentions = {split: {text for ann in (sample / "ner" / language / split).glob("*.ann")
                            for _, _, text in read_ann(ann)} for split in SPLITS}
        assert not held_out & (mentions["train"] | mentions["dev"])
        assert held_out & mentions["test"]
        corpus = (sample / "corpora" / f"clinical_{language}.jsonl").read_text(encoding="utf-8")
        assert all(term in corpus for term in held_out & mentions["test"])


# ----------------------------------------------------------------------------- the real corpora's shapes


def test_corpora_screening_and_training_documents_are_those_of_before(sample: Path) -> None:
    """Only the NER files' shapes and type names, and the test splits, changed: the corpora (less what was
    planted in them later, and their patient ids), the screening training and dev records and every es/nl NER
    training and dev file are the bytes they were."""
    corpora = {path.name: b"".join(without_patient_id(line) for line in clean_lines(sample, path.stem))
               for path in (sample / "corpora").iterdir()}
    assert digest_files(corpora) == BEFORE["corpora"]
    screening = [p for p in (sample / "screening").rglob("*.jsonl") if p.stem != "test"]
    assert digest(sample / "screening", screening) == BEFORE["screening_train_dev"]
    splits = [sample / "ner" / language / split for language in BRAT_LANGUAGES for split in ("train", "dev")]
    assert digest(sample, [p for folder in splits for p in folder.glob("*.txt")]) == BEFORE["ner_train_dev_text"]
    files = [p for folder in splits for p in [*folder.iterdir(), folder.with_suffix(".conll")] if p != sample / SLIPPED]
    assert digest(sample, files) == BEFORE["ner_train_dev_files"]


def test_test_documents_mostly_name_held_out_terms(sample: Path) -> None:
    """TEST_HELD_OUT_RATE: most test mentions are terms NER training never annotated (drawn uniformly, about a
    quarter were), so the test set measures what pretraining taught; training and dev name none of them."""
    for language in BRAT_LANGUAGES:
        held_out = held_out_terms(VOCABULARIES[language])
        mentions = {split: [text for ann in (sample / "ner" / language / split).glob("*.ann")
                            for _, _, text in read_ann(ann)] for split in SPLITS}
        share = sum(text in held_out for text in mentions["test"]) / len(mentions["test"])
        assert share > 0.5, (language, share)
        assert not any(text in held_out for text in mentions["train"] + mentions["dev"])


def test_ro_is_one_monero_column_file(sample: Path) -> None:
    folder = sample / "ner" / "ro"
    assert sorted(p.name for p in folder.iterdir()) == ["monero.conllu", "monero.tsv"]  # no split, no BRAT
    sentences = column_sentences(folder / "monero.tsv")
    lines = [line for sentence in sentences for line in sentence]
    widths = Counter(len(line) for line in lines)
    assert set(widths) == {2, 4} and 0.001 <= widths[2] / len(lines) <= 0.015, widths
    assert not any(line[0] == "-DOCSTART-" for line in lines)
    assert all(line[1] == line[0].lower() for line in lines)
    tags = Counter(line[2] for line in lines if len(line) == 4)
    assert set(tags) <= {"O"} | {f"{p}-{t}" for p in "BI" for t in MONERO_TYPES}
    assert {f"B-{t}" for t in MONERO_TYPES} <= set(tags)

    bare = 0  # an I-X after a gap: the later part of a discontinuous entity, MoNERo's way
    for sentence in sentences:
        previous, opened = "O", set()
        for line in sentence:
            if len(line) == 2:
                continue
            tag = line[2]
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                bare += 1
                assert tag[2:] in opened, sentence  # there is an earlier entity of its type to join
            if tag.startswith("B-"):
                opened.add(tag[2:])
            previous = tag
    assert bare >= 5


def test_ro_reads_back_with_the_monero_settings_only(sample: Path) -> None:
    path = sample / "ner" / "ro" / "monero.tsv"
    short = sum(len(line) == 2 for s in column_sentences(path) for line in s)
    joined = read_ner_corpus(path, "conll", MONERO)
    split = read_ner_corpus(path, "conll", ColumnFormat(token=0, tag=2, separator="tab", short_lines="skip"))
    assert joined.skipped_lines == short > 0
    entities = [e for doc in joined.documents for e in doc.entities]
    assert {e.type for e in entities} == MONERO_TYPES
    discontinuous = [e for e in entities if len(e.fragments) > 1]
    assert discontinuous and {e.type for e in discontinuous} <= {"DISO", "PROC"}  # compounds: "head site1 and site2"
    assert sum(len(doc.entities) for doc in split.documents) == len(entities) + len(discontinuous)
    with pytest.raises(UserError):  # the default tag column is the last one: POS
        read_ner(path, "conll")
    with pytest.raises(UserError):  # the two-column lines
        read_ner(path, "conll", ColumnFormat(token=0, tag=2, separator="tab"))


def test_ro_held_out_terms_only_in_the_last_documents(sample: Path) -> None:
    """ro has no split: its documents are those the three splits would hold, in order, so the held-out terms
    are rare in any split cut from it (they occur in the last fifth of the documents only)."""
    held_out = {" ".join(WORD.findall(term)) for term in held_out_terms(VOCABULARIES["ro"])}
    positions = []
    sentences = column_sentences(sample / "ner" / "ro" / "monero.tsv")
    for i, sentence in enumerate(sentences):
        text = " ".join(line[0] for line in sentence)
        positions += [i for term in held_out if f" {term} " in f" {text} "]
    assert positions and min(positions) > 0.7 * len(sentences)  # test documents: the last ~20% of sentences


def test_ro_conllu_is_monero_as_ud_publishes_it(sample: Path) -> None:
    """CoNLL-U with # newdoc id / # sent_id / # text, the tag as BioNERLabel in MISC, multiword tokens and empty
    nodes; the same sentences, tokens and tags as monero.tsv (whose two-column lines carry no tag)."""
    path = sample / "ner" / "ro" / "monero.conllu"
    raw = path.read_text(encoding="utf-8")
    assert all(len(line.split("\t")) == 10 for line in raw.splitlines() if line and not line.startswith("#"))
    sentences = conllu.parse(raw)
    tsv = column_sentences(sample / "ner" / "ro" / "monero.tsv")
    assert len(sentences) == len(tsv)
    newdocs = [s.metadata["newdoc id"] for s in sentences if "newdoc id" in s.metadata]
    assert "newdoc id" in sentences[0].metadata and len(newdocs) == len(set(newdocs)) == 60
    assert len({s.metadata["sent_id"] for s in sentences}) == len(sentences)
    ranges = empty = 0
    for sentence, columns in zip(sentences, tsv):
        assert sentence.metadata["text"] == rebuilt_text(sentence), sentence.metadata["sent_id"]
        words = ud_words(sentence)
        assert [w for w, _ in words] == [line[0] for line in columns], sentence.metadata["sent_id"]
        assert [(w, tag) for (w, tag), line in zip(words, columns) if len(line) == 4] == \
            [(line[0], line[2]) for line in columns if len(line) == 4], sentence.metadata["sent_id"]
        forms = {t["id"]: t["form"] for t in sentence if isinstance(t["id"], int)}
        for token in sentence:
            assert set(token["misc"] or {}) <= {"BioNERLabel", "SpaceAfter"}, token
            assert token["lemma"] == token["form"].lower() or isinstance(token["id"], tuple)
            if isinstance(token["id"], tuple) and token["id"][1] == "-":
                first, _, last = token["id"]
                assert last > first and token["form"] == "".join(forms[i] for i in range(first, last + 1))
                ranges += 1
            elif isinstance(token["id"], tuple):
                assert token["id"][0] in forms and token["id"][2] == 1 and token["head"] is None
                empty += 1
    assert ranges >= 1 and empty >= 1
    assert re.search(r"^(\d+)-\d+\tS-a\t.*\n\1\tS\t", raw, re.M)  # Romanian contractions: s-a = s- + a


def test_ro_conllu_reads_as_the_tsv_does(sample: Path) -> None:
    """medtrain's CoNLL-U reader (misc:BioNERLabel, discontinuous: join) finds the entities the column reader
    finds in monero.tsv: the same types, as many of each, as many discontinuous."""
    folder = sample / "ner" / "ro"
    ud = read_ner_corpus(folder / "monero.conllu", "conllu", MONERO_UD)
    tsv = read_ner_corpus(folder / "monero.tsv", "conll", MONERO_TSV)
    assert tsv.skipped_lines > 0 and ud.skipped_lines == 0

    def counts(documents: list) -> tuple[Counter[str], int]:
        entities = [e for doc in documents for e in doc.entities]
        return Counter(e.type for e in entities), sum(len(e.fragments) > 1 for e in entities)

    assert counts(ud.documents) == counts(tsv.documents)
    assert set(counts(ud.documents)[0]) == MONERO_TYPES and counts(ud.documents)[1] > 0


def test_es_has_pharmaconer_slips(sample: Path) -> None:
    """es_train_0000.ann: LATE_SLIPS T lines whose text is one or two characters before their written start (and
    nowhere nearer), one whose text is nowhere within SLIP_WINDOW characters, the rest exact; offsets inside the
    text, start < end. Against the clean .ann: only those lines' offsets differ, the late ones by their shift."""
    doc, clean = clean_slipped_ann()
    text = (sample / SLIPPED).with_suffix(".txt").read_text(encoding="utf-8")
    assert text == doc.text

    def near(start: int, surface: str, distances: range) -> list[int]:
        return [d for d in distances if text[start - d:start - d + len(surface)] == surface]

    kinds: dict[int, str] = {}  # line index -> exact, late1, late2 or far
    for i, (_, fragments, surface) in enumerate(read_ann(sample / SLIPPED)):
        if " ".join(text[s:e] for s, e in fragments) == surface:
            kinds[i] = "exact"
            continue
        (start, end), = fragments  # only contiguous entities slip
        assert 0 <= start < end <= len(text) and end - start == len(surface), surface
        found = near(start, surface, range(-SLIP_WINDOW, SLIP_WINDOW + 1))
        assert found in ([1], [2], []), (surface, found)  # late: only there (a repair takes the nearest match)
        kinds[i] = f"late{found[0]}" if found else "far"
    counts = Counter(kinds.values())
    assert counts["late1"] + counts["late2"] == LATE_SLIPS and counts["late1"] and counts["late2"], counts
    assert counts["far"] == 1 and counts["exact"] == len(kinds) - LATE_SLIPS - 1, counts

    written = [line for line in (sample / SLIPPED).read_text(encoding="utf-8").splitlines() if line[0] == "T"]
    before = [line for line in clean.splitlines() if line[0] == "T"]
    lines = [line for line in (sample / SLIPPED).read_text(encoding="utf-8").splitlines() if line[0] != "T"]
    assert lines == [line for line in clean.splitlines() if line[0] != "T"]  # the # and N lines as they were
    for kind, now, then in zip(kinds.values(), written, before, strict=True):
        (t_id, middle, surface), (t_then, middle_then, surface_then) = now.split("\t"), then.split("\t")
        (label, start, _), (label_then, start_then, _) = middle.split(" ", 2), middle_then.split(" ", 2)
        assert (t_id, label, surface) == (t_then, label_then, surface_then)
        shift, expected = int(start) - int(start_then), {"exact": 0, "late1": 1, "late2": 2}.get(kind)
        assert shift == expected if expected is not None else abs(shift) > SLIP_WINDOW, (kind, now)
        assert (kind == "exact") == (now == then)


def test_es_slips_are_repaired_by_default(sample: Path) -> None:
    """The default reader (offset_mismatch: repair) moves the late ones back and skips the far one; the other
    documents need nothing."""
    doc, clean = clean_slipped_ann()
    corpus = read_ner_corpus(sample / "ner" / "es" / "train", "brat")
    assert (corpus.repaired, corpus.skipped_annotations) == (LATE_SLIPS, 1)
    read = {(e.type, e.fragments) for e in corpus.documents[0].entities}
    expected = {(label, tuple(fragments)) for label, fragments, _ in read_ann(sample / SLIPPED, clean)}
    assert read < expected and len(expected - read) == 1


def test_es_is_pharmaconer_style_brat(sample: Path) -> None:
    drug_types: dict[str, set[str]] = {}
    notes = references = 0
    for ann in sorted((sample / "ner" / "es").glob("*/*.ann")):
        entities: dict[str, tuple[str, str]] = {}
        for line in ann.read_text(encoding="utf-8").splitlines():
            key, middle, text = line.split("\t")
            if key.startswith("T"):
                entities[key] = (middle.split(" ")[0], text)
                if middle.split(" ")[0] in ("NORMALIZABLES", "NO_NORMALIZABLES"):
                    drug_types.setdefault(text, set()).add(middle.split(" ")[0])
            elif key.startswith("#"):
                kind, target = middle.split(" ")
                label = entities[target][0]
                assert kind == "AnnotatorNotes" and label in ("NORMALIZABLES", "NO_NORMALIZABLES"), line
                assert (text == "<null>") == (label == "NO_NORMALIZABLES") and (text == "<null>" or text.isdigit())
                notes += 1
            else:
                kind, target, code = middle.split(" ")
                assert key.startswith("N") and kind == "Reference" and re.fullmatch(r"SNOMED:\d+", code), line
                assert entities[target] == ("NORMALIZABLES", text), line
                references += 1
    assert notes == sum(1 for ann in (sample / "ner" / "es").glob("*/*.ann")
                        for line in ann.read_text(encoding="utf-8").splitlines()
                        if re.match(r"T\d+\t(NO_)?NORMALIZABLES ", line))  # a note on every drug
    assert 0 < references < notes
    assert all(len(types) == 1 for types in drug_types.values()), "a drug's type depends on its term only"
    kinds = Counter(next(iter(types)) for types in drug_types.values())
    assert 0 < kinds["NO_NORMALIZABLES"] < kinds["NORMALIZABLES"], kinds
    read = {e.type for doc in read_ner(sample / "ner" / "es" / "train", "brat") for e in doc.entities}
    assert read == set(TYPE_RANK["es"])  # medtrain's reader takes the T lines and passes over # and N


@pytest.mark.parametrize("language", BRAT_LANGUAGES)
def test_brat_languages_have_their_own_types(sample: Path, language: str) -> None:
    for split in SPLITS:
        read = {e.type for doc in read_ner(sample / "ner" / language / split, "brat") for e in doc.entities}
        assert read <= set(TYPE_RANK[language]) and len(read) >= 4, (language, split)
    conf = (sample / "ner" / language / "annotation.conf").read_text(encoding="utf-8")
    entities = conf.split("[entities]\n")[1].split("[relations]")[0].split()
    assert sorted(entities) == sorted(TYPE_RANK[language])


def test_every_template_slot_has_words_or_numbers() -> None:
    """The templates live in JSON files now, so a slot misspelt there is caught here, not mid-generation."""
    for language, vocabulary in VOCABULARIES.items():
        templates = [*vocabulary.clinical_titles, *vocabulary.cues, *vocabulary.decoys, *vocabulary.biomedical_titles,
                     *(t for sections in (vocabulary.clinical_sections, vocabulary.biomedical_sections,
                                          vocabulary.general_topics) for title, body in sections for t in (title, *body))]
        slots = {slot for template in templates for slot in re.findall(r"\{(\w+?)\d?\}", template)}
        known = {*ENTITY_TYPES, *vocabulary.words, *COMMON_WORDS, *NUMBERS}
        assert slots and slots <= known, f"{language}: unknown slots {sorted(slots - known)}"
        assert not re.search("[şţŞŢ]", str(vocabulary)), f"{language}: a cedilla letter instead of comma-below"


def test_vocabulary_files_are_package_data() -> None:
    """A non-editable install ships only the files pyproject.toml names: every vocabulary file must match."""
    package = Path(__file__).resolve().parents[2] / "medtrain" / "data" / "sample"
    pyproject = tomllib.loads((package.parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["medtrain.data.sample"]
    files = [p.relative_to(package).as_posix() for p in (package / "vocabulary").iterdir()]
    assert files and all(any(fnmatch(f, pattern) for pattern in patterns) for f in files), files


# ----------------------------------------------------------------------------- planted contamination


def ro_test_documents(sample: Path, tmp_path: Path) -> dict[str, str]:
    """The ro documents `medtrain split monero.conllu --ratios 0.6,0.2,0.2 --by sentence --order source` puts
    wholly in test, with their text: the `# text` lines, one per line."""
    source = sample / "ner" / "ro" / "monero.conllu"
    result = split_corpus(source, tmp_path / "ro", (0.6, 0.2, 0.2), by="sentence", order="source")
    test_ids = {s.metadata["sent_id"] for s in conllu.parse(result.paths["test"].read_text(encoding="utf-8"))}
    documents: dict[str, list[conllu.TokenList]] = {}
    for sentence in conllu.parse(source.read_text(encoding="utf-8")):
        name = sentence.metadata.get("newdoc id") or next(reversed(documents))
        documents.setdefault(name, []).append(sentence)
    return {name: "".join(s.metadata["text"] + "\n" for s in sentences) for name, sentences in documents.items()
            if all(s.metadata["sent_id"] in test_ids for s in sentences)}


def test_planted_records_are_where_contamination_json_says(sample: Path, tmp_path: Path) -> None:
    """Each clinical corpus holds about ten planted records, of every kind, on the lines contamination.json names,
    each related to its source as its kind says; the ordinary records name patients no screening file has."""
    contamination = planted(sample)
    assert sorted(contamination) == [f"clinical_{language}" for language in sorted(LANGUAGES)]
    ro_test = ro_test_documents(sample, tmp_path)
    for language in LANGUAGES:
        name = f"clinical_{language}"
        entries, lines = contamination[name], corpus_lines(sample, name)
        assert 8 <= len(entries) <= 15 and {e["kind"] for e in entries} == PLANTED_KINDS, (name, entries)
        assert len({e["line"] for e in entries}) == len(entries) and all(e["corpus"] == name for e in entries)
        assert all(e.keys() <= {"corpus", "line", "kind", "source", "document", "patient_id"} for e in entries)
        test_notes = screening(sample, language, "test")
        every_patient = {r["patient_id"] for split in SPLITS for r in screening(sample, language, split)}
        kinds: Counter[tuple[str, str]] = Counter()
        for entry in entries:
            record = json.loads(lines[entry["line"] - 1])
            text, kind = record["text"], entry["kind"]
            assert (record["language"], record["domain"]) == (language, "clinical")
            assert ("patient_id" in entry) == (kind == "patient")
            if entry["source"] == f"screening/{language}/test.jsonl":
                kinds[kind, "screening"] += 1
                if kind == "patient":  # a new note of a test patient: only the patient id gives it away
                    notes = [r["text"] for r in test_notes if r["patient_id"] == entry["patient_id"]]
                    assert notes and record["patient_id"] == entry["patient_id"] == entry["document"]
                    assert not ngrams(text) & set().union(*map(ngrams, notes)) and len(normalised(text)) >= 13
                else:  # a copied note under an ordinary patient id: only its text gives it away
                    assert kind == "verbatim" and record["patient_id"] not in every_patient
                    assert text == next(r["text"] for r in test_notes if r["note_id"] == entry["document"])
                continue
            kinds[kind, "ner"] += 1
            assert record["patient_id"] not in every_patient
            if language == "ro":
                assert entry["source"] == "ner/ro/monero.conllu" and entry["document"] in ro_test, entry
                source = ro_test[entry["document"]]
            else:
                assert re.fullmatch(rf"ner/{language}/test/{language}_test_\d{{4}}\.txt", entry["source"]), entry
                assert Path(entry["source"]).stem == entry["document"]
                source = (sample / entry["source"]).read_text(encoding="utf-8")
            if kind == "verbatim":
                assert text == source
            elif kind in ("whitespace", "case"):
                assert text != source and normalised(text) == normalised(source), entry
                assert (text.split() == source.split()) == (kind == "whitespace"), entry
                assert kind == "whitespace" or text.lower() == source.lower()
            else:
                assert kind == "embedded" and source in text and len(text) > len(source) + 100, entry
        assert all(kinds[kind, "ner"] for kind in ("verbatim", "whitespace", "case", "embedded")), (name, kinds)
        assert kinds["verbatim", "screening"] == 1 and kinds["patient", "screening"] >= 1, (name, kinds)

        ordinary = [json.loads(line) for i, line in enumerate(lines, 1) if i not in {e["line"] for e in entries}]
        ids = [r["patient_id"] for r in ordinary]
        assert ids == [f"c-{language}-{i:05d}" for i in range(len(ordinary))] and not set(ids) & every_patient


def test_planted_records_scale(tmp_path: Path) -> None:
    """Scale 3 plants about three times as many, the NER copies from distinct test documents; nothing planted
    moves an ordinary record's text."""
    write_sample_data(tmp_path, seed=0, scale=3.0)
    for language in LANGUAGES:
        entries = planted(tmp_path)[f"clinical_{language}"]
        assert 25 <= len(entries) <= 40 and {e["kind"] for e in entries} == PLANTED_KINDS
        ner = [e["document"] for e in entries if e["source"].startswith("ner/")]
        assert len(ner) == len(set(ner)) >= 20, language


def test_clean_plants_nothing_and_keeps_everything_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sample-data --clean` writes the clean corpora (the planted lines removed give them byte for byte), no
    contamination.json, and every other file, the tokenizer included, as a contaminated run does."""
    from medtrain.cli import run

    monkeypatch.chdir(tmp_path)
    write_sample_data(Path("dirty"), seed=3, scale=0.2)
    Path("clean").mkdir()
    Path("clean", "contamination.json").write_text("{}", encoding="utf-8")  # stale, from an earlier run
    assert run(["sample-data", "clean", "--seed", "3", "--scale", "0.2", "--clean"]) == 0
    dirty, clean = all_files(Path("dirty")), all_files(Path("clean"))
    assert "contamination.json" in dirty and dirty.keys() - clean.keys() == {"contamination.json"}
    assert clean.keys() <= dirty.keys()
    changed = {name for name in clean if clean[name] != dirty[name]}
    assert changed == {"prepare.yaml", *(f"corpora/clinical_{language}.jsonl" for language in LANGUAGES)}
    assert dirty["prepare.yaml"].replace(b"dirty", b"clean") == clean["prepare.yaml"]
    assert [name for name in dirty if name.startswith("tokenizer/") and dirty[name] != clean[name]] == []
    for language in LANGUAGES:
        name = f"clinical_{language}"
        assert corpus_lines(Path("clean"), name) == clean_lines(Path("dirty"), name)
        assert 1 <= len(planted(Path("dirty"))[name]) < len(corpus_lines(Path("dirty"), name)) / 10
