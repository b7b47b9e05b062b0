"""NER data: BRAT and CoNLL agree on the sample data, the nested/discontinuous policy, first-subword alignment,
windows that predict every word once, decoding, IOB2 repair, BRAT round trips, span scores, and bad input that
names file and line without quoting the text."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from medtrain.data.ner import (
    IGNORE_INDEX, Entity, NerDocument, Sentence, Word, corpus_span_scores, decode, encode, exact_span_scores,
    flat_spans, label_list, read_ner, repair_iob2, synthetic_text, tags_to_entities, words_by_line, write_brat,
)
from medtrain.data.ner_format import BratFormat
from medtrain.data.sample import SPLITS, write_sample_data
from medtrain.data.tokenizer import load_tokenizer
from medtrain.errors import UserError

SECRET = "Ionescu Maria CNP 2850312"  # stands for patient text that must never reach a message
NESTED_TEXT = "Diagnose: carcinoom van de long en de lever.\nGeen koorts.\n"
NESTED_ANN = (
    "T1\tDISEASE 10 31\tcarcinoom van de long\n"
    "T2\tANATOMY 27 31\tlong\n"
    "T3\tDISEASE 10 26;38 43\tcarcinoom van de lever\n"
    "T4\tANATOMY 38 43\tlever\n"
    "R1\tLocation Arg1:T1 Arg2:T2\n"
    "A1\tNegated T1\n"
    "#1\tAnnotatorNotes T1\tcheck this\n"
    "T5\tSYMPTOM 50 56\tkoorts\n"
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    write_sample_data(out, seed=0, scale=0.3)
    return out


@pytest.fixture(scope="module")
def tokenizer(sample: Path):
    return load_tokenizer(sample / "tokenizer")


@pytest.fixture(scope="module")
def brat_train(sample: Path) -> list[NerDocument]:
    return read_ner(sample / "ner" / "nl" / "train", "brat")


def label_ids(docs_by_language: list[list[NerDocument]]) -> tuple[list[str], dict[str, int]]:
    labels = label_list(docs_by_language)
    return labels, {label: i for i, label in enumerate(labels)}


def word_spans(doc: NerDocument, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Character spans as (first word, last word, type) over the document's words, to compare across texts."""
    words = [w for s in doc.sentences for w in s.words]
    first = {w.start: i for i, w in enumerate(words)}
    last = {w.end: i for i, w in enumerate(words)}
    return sorted((first[start], last[end], t) for start, end, t in spans)


def sentences_of(docs: list[NerDocument]) -> list[Sentence]:
    return [s for doc in docs for s in doc.sentences]


def one_hot_logits(features, n_labels: int, pad_to: int) -> torch.Tensor:
    """A padded batch of logits that put all mass on each token's gold label."""
    logits = torch.zeros(len(features), pad_to, n_labels, dtype=torch.bfloat16)
    for row, feature in enumerate(features):
        for position, label in enumerate(feature.labels):
            logits[row, position, max(label, 0)] = 1.0
    return logits


def write_brat_pair(folder: Path, name: str, text: str, ann: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8", newline="")
    if ann is not None:
        (folder / f"{name}.ann").write_text(ann, encoding="utf-8")


# ----------------------------------------------------------------------------- readers


def test_brat_and_conll_readings_of_the_sample_data_agree(sample: Path) -> None:
    discontinuous = 0
    for language in ("nl", "es"):  # ro is one MoNERo-style column file, with no BRAT twin
        for split in SPLITS:
            brat = read_ner(sample / "ner" / language / split, "brat")
            conll = read_ner(sample / "ner" / language / f"{split}.conll", "conll")
            assert len(brat) == len(conll)
            for b, c in zip(brat, conll):
                if b.doc_id == "es_train_0000":  # its .ann carries PharmaCoNER-like slips, one not placeable, so
                    continue                     # its entities differ from the clean .conll (test_sample.py)
                assert [[w.text for w in s.words] for s in b.sentences] == \
                    [[w.text for w in s.words] for s in c.sentences]
                assert [s.tags for s in b.sentences] == [s.tags for s in c.sentences], (b.doc_id, c.doc_id)
                assert b.text is not None and c.text == synthetic_text(c)
                assert all(t.text[w.start:w.end] == w.text for t in (b, c) for s in t.sentences for w in s.words)
                assert word_spans(c, [(e.start, e.end, e.type) for e in c.entities]) == \
                    word_spans(b, flat_spans(b.entities))  # the column file holds the flattened BRAT entities
            discontinuous += sum(len(e.fragments) > 1 for doc in brat for e in doc.entities)
    assert discontinuous > 0  # the policy's hard case was exercised


def test_nested_and_discontinuous_entities_follow_the_longest_wins_policy(tmp_path: Path) -> None:
    write_brat_pair(tmp_path, "a", NESTED_TEXT, NESTED_ANN)
    write_brat_pair(tmp_path, "b", "Geen klachten.\n", None)  # unannotated: all O
    doc, plain = read_ner(tmp_path, "brat")
    assert len(doc.entities) == 5  # every gold entity is kept; relation, attribute and note lines ignored
    assert Entity("DISEASE", ((10, 26), (38, 43))) in doc.entities
    words = [w.text for w in doc.sentences[0].words]
    assert words == ["Diagnose", ":", "carcinoom", "van", "de", "long", "en", "de", "lever", "."]
    assert doc.sentences[0].tags == ["O", "O", "B-DISEASE", "I-DISEASE", "I-DISEASE", "I-DISEASE", "O", "O",
                                     "B-ANATOMY", "O"]
    assert doc.sentences[1].tags == ["O", "B-SYMPTOM", "O"]
    assert doc.sentences[1].words[1] == Word("koorts", 50, 56)
    assert plain.sentences[0].tags == ["O", "O", "O"] and plain.entities == []


def test_conll_reader_splits_documents_and_sentences_with_synthetic_offsets(tmp_path: Path) -> None:
    path = tmp_path / "x.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nGeen NN O\nkoorts NN B-SYMPTOM\n\n\nTos O\n"
                    "-DOCSTART-\tO\nfiebre\tB-SYMPTOM\n", encoding="utf-8")
    first, second = read_ner(path, "conll")
    assert [[w.text for w in s.words] for s in first.sentences] == [["Geen", "koorts"], ["Tos"]]
    assert first.sentences[0].words[1] == Word("koorts", 5, 11)  # "Geen koorts\nTos\n"
    assert first.sentences[1].words[0] == Word("Tos", 12, 15)
    assert second.sentences[0].tags == ["B-SYMPTOM"] and first.doc_id != second.doc_id


def test_iob2_repair_in_reader_and_function(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert repair_iob2(["I-DRUG", "I-DRUG", "O", "I-DRUG", "B-DRUG", "I-SYMPTOM", "I-SYMPTOM"]) == \
        ["B-DRUG", "I-DRUG", "O", "B-DRUG", "B-DRUG", "B-SYMPTOM", "I-SYMPTOM"]
    path = tmp_path / "x.conll"
    path.write_text("Geen O\nkoorts I-SYMPTOM\npijn I-DRUG\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="medtrain.data.ner"):
        (doc,) = read_ner(path, "conll")
    assert doc.sentences[0].tags == ["O", "B-SYMPTOM", "B-DRUG"]
    assert "2 I- tags" in caplog.text


def test_label_list_is_shared_across_languages(sample: Path, brat_train: list[NerDocument]) -> None:
    es = read_ner(sample / "ner" / "es" / "dev.conll", "conll")
    labels = label_list([brat_train, es])
    assert labels[0] == "O" and len(labels) == len(set(labels))
    assert labels[1:] == [f"{p}-{t}" for t in sorted({label[2:] for label in labels[1:]}) for p in "BI"]
    assert label_list([es, brat_train]) == labels


# ----------------------------------------------------------------------------- encoding and decoding


def test_first_subword_carries_the_label(tokenizer) -> None:
    assert len(tokenizer.tokenize("zzqxj")) > 1
    words = [Word(t, 0, 0) for t in ["Patiënt", "met", "zzqxj", "en", "koorts"]]
    sentence = Sentence("d", words, ["O", "O", "B-DISEASE", "O", "B-SYMPTOM"])
    labels, label2id = label_ids([[NerDocument("d", None, [sentence], [])]])
    (feature,) = encode([sentence], tokenizer, label2id, max_length=64)
    labelled = [(w, labels[y]) for w, y in zip(feature.word_index, feature.labels) if y != IGNORE_INDEX]
    assert labelled == list(enumerate(sentence.tags))
    assert feature.word_index.count(2) == 1  # one label for the several pieces of "zzqxj"
    assert all((w == -1) == (y == IGNORE_INDEX) for w, y in zip(feature.word_index, feature.labels))


def test_encoded_labels_give_back_the_gold_tags(tokenizer, brat_train: list[NerDocument]) -> None:
    sentences = sentences_of(brat_train)
    labels, label2id = label_ids([brat_train])
    features = encode(sentences, tokenizer, label2id, max_length=128)
    rebuilt = [[None] * len(s.words) for s in sentences]
    for feature in features:
        for word, label in zip(feature.word_index, feature.labels):
            if word >= 0:
                rebuilt[feature.sentence_index][word] = labels[label]
    assert rebuilt == [s.tags for s in sentences]


def test_windows_of_a_long_sentence_predict_every_word_once(tokenizer) -> None:
    giant = "zzqxj" * 8  # more pieces than a window holds
    texts = ("De patiënt kreeg metoprolol en furosemide tegen de klachten ." * 12).split() + [giant, "."]
    sentence = Sentence("d", [Word(t, 0, 0) for t in texts], ["O"] * len(texts))
    max_length = 24
    features = encode([sentence], tokenizer, {"O": 0}, max_length=max_length, stride_words=5)
    assert len(features) > 5 and all(len(f.input_ids) <= max_length for f in features)
    predicted = [w for f in features for w in f.word_index if w >= 0]
    assert predicted == list(range(len(texts)))  # every word once, in order
    offsets = [f.word_offset for f in features] + [len(texts)]
    for feature, end in zip(features, offsets[1:]):  # whole words: a window holds all pieces of its words
        if texts[feature.word_offset] == giant:
            assert len(feature.input_ids) == max_length and end == feature.word_offset + 1  # alone, truncated
            continue
        pieces = tokenizer(texts[feature.word_offset:end], is_split_into_words=True, add_special_tokens=False)
        assert feature.input_ids[1:-1][-len(pieces["input_ids"]):] == pieces["input_ids"]


def test_decode_of_gold_logits_reproduces_gold_tags(tokenizer, brat_train: list[NerDocument]) -> None:
    sentences = sentences_of(brat_train)
    labels, label2id = label_ids([brat_train])
    features = encode(sentences, tokenizer, label2id, max_length=12, stride_words=3)
    assert len(features) > len(sentences)  # windows cut through entities here
    logits = one_hot_logits(features, len(labels), pad_to=16)
    assert decode(features, logits, labels, sentences) == [s.tags for s in sentences]
    pred_ids = [np.array([max(y, 0) for y in f.labels]) for f in features]
    assert decode(features, pred_ids, dict(enumerate(labels)), sentences) == [s.tags for s in sentences]


def test_decode_repairs_iob2_and_bridges_dropped_words(tokenizer) -> None:
    words = [Word(t, 0, 0) for t in ["hyper", "\u00ad", "tensie", "en", "koorts"]]  # soft hyphen: no pieces
    sentence = Sentence("d", words, ["O"] * 5)
    labels = ["O", "B-DISEASE", "I-DISEASE", "I-SYMPTOM"]
    (feature,) = encode([sentence], tokenizer, {"O": 0}, max_length=32)
    assert 1 not in feature.word_index
    wanted = {0: 1, 2: 2, 3: 0, 4: 3}  # B-DISEASE, -, I-DISEASE, O, I-SYMPTOM (invalid after O)
    pred = [wanted.get(w, 0) for w in feature.word_index]
    assert decode([feature], [pred], labels, [sentence]) == [["B-DISEASE", "I-DISEASE", "I-DISEASE", "O", "B-SYMPTOM"]]


def test_unseen_labels_train_as_o_and_stay_gold(tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    sentence = Sentence("d", [Word("aspirine", 0, 8), Word("koorts", 9, 15)], ["B-DRUG", "B-SYMPTOM"])
    with caplog.at_level(logging.WARNING, logger="medtrain.data.ner"):
        (feature,) = encode([sentence], tokenizer, {"O": 0, "B-SYMPTOM": 1, "I-SYMPTOM": 2}, max_length=16)
    assert [y for y in feature.labels if y != IGNORE_INDEX] == [0, 1]
    assert sentence.tags == ["B-DRUG", "B-SYMPTOM"] and "B-DRUG" in caplog.text


# ----------------------------------------------------------------------------- entities, BRAT output, scores


def test_write_brat_round_trips_gold_entities(tmp_path: Path, brat_train: list[NerDocument]) -> None:
    for doc in brat_train[:3]:
        write_brat(doc, doc.entities, tmp_path / "out" / f"{doc.doc_id}.ann")
    back = read_ner(tmp_path / "out", "brat")
    assert [(d.doc_id, d.text, sorted(d.entities, key=repr)) for d in back] == \
        [(d.doc_id, d.text, sorted(d.entities, key=repr)) for d in brat_train[:3]]


def test_write_brat_of_predicted_conll_tags_round_trips(tmp_path: Path, sample: Path) -> None:
    docs = read_ner(sample / "ner" / "es" / "dev.conll", "conll")
    for doc in docs:
        entities = [e for s in doc.sentences for e in tags_to_entities(s, s.tags)]
        write_brat(doc, entities, tmp_path / f"{doc.doc_id}.ann")
    back = read_ner(tmp_path, "brat")
    assert [[(w, s.tags) for s in d.sentences for w in s.words] for d in back] == \
        [[(w, s.tags) for s in d.sentences for w in s.words] for d in docs]


def test_tags_to_entities_uses_word_offsets() -> None:
    (words,) = words_by_line("AP: fibrilatie atriale, astm.")
    sentence = Sentence("d", words, ["O"] * len(words))
    tags = ["O", "O", "B-DISEASE", "I-DISEASE", "O", "I-DISEASE", "O"]  # the last one is repaired to B-
    assert tags_to_entities(sentence, tags) == [Entity("DISEASE", ((4, 22),)), Entity("DISEASE", ((24, 28),))]


def test_exact_span_scores() -> None:
    disease, anatomy = Entity("DISEASE", ((10, 31),)), Entity("ANATOMY", ((27, 31),))
    discontinuous = Entity("DISEASE", ((10, 26), (38, 43)))
    lever = Entity("ANATOMY", ((38, 43),))
    gold = [disease, anatomy, discontinuous, lever]

    perfect = exact_span_scores([disease], [disease])
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)

    flat = exact_span_scores(gold, [disease, lever])  # the best a flat tagger can do here
    assert flat["precision"] == 1.0 and flat["recall"] == 0.5 and flat["recall_ceiling"] == 0.5
    assert flat["per_type"]["ANATOMY"]["recall"] == 0.5 and flat["per_type"]["DISEASE"]["correct"] == 1

    wrong = exact_span_scores([disease], [Entity("SYMPTOM", disease.fragments), Entity("DISEASE", ((10, 30),))])
    assert wrong["correct"] == 0 and wrong["f1"] == 0.0 and wrong["per_type"]["SYMPTOM"]["predicted"] == 1
    assert exact_span_scores([], [])["f1"] == 0.0

    per_doc = corpus_span_scores([[disease], [anatomy]], [[disease], [disease]])  # same offsets, other document
    assert (per_doc["correct"], per_doc["support"], per_doc["predicted"]) == (1, 2, 2)


# ----------------------------------------------------------------------------- bad input


CONLL_CASES = {
    "one column": ("Geen O\n\nkoorts\n", 3),
    "invalid prefix": ("Geen O\naspirine X-DRUG\n", 2),
    "empty type": ("aspirine B-\n", 1),
    "shifted text": (f"Geen O\n{SECRET}\n", 2),
    "bad utf-8": ("Geen O\n\n".encode() + b"koorts \xff\n", 3),
}


@pytest.mark.parametrize("case", CONLL_CASES)
def test_bad_conll_names_file_and_line(tmp_path: Path, case: str) -> None:
    content, line = CONLL_CASES[case]
    path = tmp_path / "bad.conll"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as err:
        read_ner(path, "conll")
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert not any(part in str(err.value) for part in SECRET.split())


ANN_CASES = {
    "offset beyond text": f"T1\tDISEASE 0 7\t{SECRET[:7]}\nT2\tDISEASE 20 999\tx\n",
    "text mismatch": f"T1\tDISEASE 0 7\t{SECRET[:7]}\nT2\tDISEASE 8 13\tlever\n",
    "malformed line": f"T1\tDISEASE 0 7\t{SECRET[:7]}\nT2 DISEASE 8 13 Maria\n",
    "bad offsets": f"T1\tDISEASE 0 7\t{SECRET[:7]}\nT2\tDISEASE 8-13\tMaria\n",
    "reversed fragment": f"T1\tDISEASE 0 7\t{SECRET[:7]}\nT2\tDISEASE 13 8\tMaria\n",
}


@pytest.mark.parametrize("case", ANN_CASES)
def test_bad_ann_names_file_and_line_without_the_text(tmp_path: Path, case: str) -> None:
    write_brat_pair(tmp_path, "doc", SECRET + "\n", ANN_CASES[case])
    with pytest.raises(UserError) as err:
        read_ner(tmp_path, "brat", brat=BratFormat(offset_mismatch="error"))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'doc.ann'}:2: ")
    assert not any(part in message for part in SECRET.split())


def test_missing_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "orphan.ann").write_text("T1\tDISEASE 0 4\tGeen\n", encoding="utf-8")
    with pytest.raises(UserError, match="orphan.txt"):
        read_ner(tmp_path, "brat")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .txt files"):
        read_ner(tmp_path / "empty", "brat")
    with pytest.raises(UserError, match="not found"):
        read_ner(tmp_path / "nope.conll", "conll")
    with pytest.raises(UserError, match="unknown NER format"):
        read_ner(tmp_path, "json")  # type: ignore[arg-type]
