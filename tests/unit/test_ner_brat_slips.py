"""BRAT annotation slips (issue 24): entity lines whose text is not at their offsets in the .txt are repaired
within a window, skipped or an error by `BratFormat.offset_mismatch`, or kept as written for test gold; each
affected file gets one warning that names where and never quotes the text; broken lines stay errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medtrain.data.ner import Entity, NerCorpus, NerDocument, read_ner_corpus
from medtrain.data.ner_format import BratFormat
from medtrain.errors import UserError

SECRET = "Ionescu Maria CNP 2850312"  # stands for patient text that must never reach a message
LOGGER = "medtrain.data.ner.brat"

# PharmaCoNER 2019's shape: "Bence-Jones" at 1375-1386, annotated (line 5) one character late.
PADDING = "Sin antecedentes.\n" * 76
PHARMA_TEXT = PADDING + " " * (1375 - len(PADDING)) + "Bence-Jones positiva y anemia.\n"
PHARMA_ANN = (
    "T1\tNORMALIZABLES 0 3\tSin\n"
    "#1\tAnnotatorNotes T1\tnota\n"
    "N1\tReference T1 SNOMED:123\tSin\n"
    "T2\tPROTEINAS 18 21\tSin\n"
    "T5\tPROTEINAS 1376 1387\tBence-Jones\n"
)


def write_pair(folder: Path, name: str, text: str, ann: str) -> Path:
    """`name.txt` and `name.ann` in `folder`, written byte for byte; the .ann path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8", newline="")
    path = folder / f"{name}.ann"
    path.write_text(ann, encoding="utf-8", newline="")
    return path


def span(text: str, word: str, nth: int = 0) -> tuple[int, int]:
    """Offsets of the nth occurrence of `word` in `text`."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(word, start + 1)
    return start, start + len(word)


def shifted(text: str, word: str, by: int) -> str:
    """`START END` of `word`, moved by `by` characters: a slip."""
    start, end = span(text, word)
    return f"{start + by} {end + by}"


def tagged(doc: NerDocument, line: int) -> list[tuple[str, str]]:
    """(word, tag) of one sentence (line of the .txt)."""
    sentence = doc.sentences[line]
    return [(w.text, t) for w, t in zip(sentence.words, sentence.tags)]


def counts(corpus: NerCorpus) -> tuple[int, int, int]:
    return corpus.repaired, corpus.skipped_annotations, corpus.as_written


# ----------------------------------------------------------------------------- repair


def test_pharmaconer_late_start_is_repaired(tmp_path: Path) -> None:
    ann = write_pair(tmp_path, "doc", PHARMA_TEXT, PHARMA_ANN)
    corpus = read_ner_corpus(tmp_path, "brat")
    (doc,) = corpus.documents
    assert counts(corpus) == (1, 0, 0)
    assert doc.entities[-1] == Entity("PROTEINAS", ((1375, 1386),))
    assert doc.entities[-1].source == (str(ann), 5)
    assert tagged(doc, 76)[:2] == [("Bence", "B-PROTEINAS"), ("-", "I-PROTEINAS")]


def test_off_by_one_and_two_are_repaired_and_the_tags_follow(tmp_path: Path) -> None:
    text = "Proteinuria de Bence-Jones y anemia.\nSin fiebre.\n"
    write_pair(tmp_path, "doc", text,
               f"T1\tPROTEINAS {shifted(text, 'Bence-Jones', 1)}\tBence-Jones\n"
               f"T2\tDISEASE {shifted(text, 'anemia', 2)}\tanemia\n"
               f"T3\tDISEASE {shifted(text, 'fiebre', 0)}\tfiebre\n")
    corpus = read_ner_corpus(tmp_path, "brat", brat=BratFormat(offset_mismatch="repair"))
    (doc,) = corpus.documents
    assert counts(corpus) == (2, 0, 0)
    assert doc.entities == [Entity("PROTEINAS", (span(text, "Bence-Jones"),)),
                            Entity("DISEASE", (span(text, "anemia"),)), Entity("DISEASE", (span(text, "fiebre"),))]
    assert tagged(doc, 0) == [("Proteinuria", "O"), ("de", "O"), ("Bence", "B-PROTEINAS"), ("-", "I-PROTEINAS"),
                              ("Jones", "I-PROTEINAS"), ("y", "O"), ("anemia", "B-DISEASE"), (".", "O")]
    assert tagged(doc, 1) == [("Sin", "O"), ("fiebre", "B-DISEASE"), (".", "O")]


def test_a_discontinuous_entity_is_shifted_as_a_whole(tmp_path: Path) -> None:
    text = " abc xyz defg rest\n"  # written 0 3;8 12, the text is at 1 4;9 13
    write_pair(tmp_path, "doc", text, "T1\tX 0 3;8 12\tabc defg\n")
    corpus = read_ner_corpus(tmp_path, "brat")
    assert counts(corpus) == (1, 0, 0)
    (doc,) = corpus.documents
    assert doc.entities == [Entity("X", ((1, 4), (9, 13)))]
    assert [t for _, t in tagged(doc, 0)] == ["B-X", "O", "B-X", "O"]  # each fragment a span of its own


def test_the_nearest_candidate_wins_and_a_tie_goes_to_the_earlier(tmp_path: Path) -> None:
    text = "dolor y dolor\n"  # "dolor" at 0 and 8
    write_pair(tmp_path, "doc", text,
               "T1\tDISEASE 5 10\tdolor\n"   # 0 is 5 before, 8 is 3 after: 8 wins
               "T2\tDISEASE 4 9\tdolor\n")   # 4 before and 4 after: the earlier wins
    corpus = read_ner_corpus(tmp_path, "brat")
    assert counts(corpus) == (2, 0, 0)
    assert corpus.documents[0].entities == [Entity("DISEASE", ((8, 13),)), Entity("DISEASE", ((0, 5),))]


def test_what_cannot_be_placed_within_the_window_is_skipped_and_counted(tmp_path: Path) -> None:
    text = "Dolor abdominal y fiebre alta.\n"
    write_pair(tmp_path, "doc", text,
               f"T1\tDISEASE {shifted(text, 'fiebre', 3)}\tfiebre\n"   # three late: outside a window of 2
               f"T2\tDISEASE {shifted(text, 'Dolor', 1)}\tDolor\n"     # one late: repaired
               "T3\tDISEASE 0 5\tlever\n"                              # nowhere in the text
               f"T4\tDISEASE {shifted(text, 'alta', 0)}\talta\n")
    corpus = read_ner_corpus(tmp_path, "brat", brat=BratFormat(repair_window=2))
    assert counts(corpus) == (1, 2, 0)
    assert corpus.documents[0].entities == [Entity("DISEASE", (span(text, "Dolor"),)),
                                            Entity("DISEASE", (span(text, "alta"),))]
    assert "B-DISEASE" not in [t for w, t in tagged(corpus.documents[0], 0) if w == "fiebre"]
    assert counts(read_ner_corpus(tmp_path, "brat")) == (2, 1, 0)  # the default window of 8 reaches "fiebre"


def test_a_repair_stays_inside_the_text(tmp_path: Path) -> None:
    # a shift of -3 would wrap around to the "b" near the end, one of +3 would run past the end onto a clipped "c"
    write_pair(tmp_path, "before", "xyzwvb\n", "T1\tX 1 2\tb\n")
    write_pair(tmp_path, "after", "abxc", "T1\tX 0 2\tc\n")
    corpus = read_ner_corpus(tmp_path, "brat", brat=BratFormat(repair_window=3))
    assert counts(corpus) == (0, 2, 0)
    assert [doc.entities for doc in corpus.documents] == [[], []]


# ----------------------------------------------------------------------------- skip, error, as written


def test_skip_drops_every_mismatch_and_counts_it(tmp_path: Path) -> None:
    text = "Proteinuria de Bence-Jones y anemia.\n"
    write_pair(tmp_path, "doc", text,
               f"T1\tPROTEINAS {shifted(text, 'Bence-Jones', 1)}\tBence-Jones\n"  # repairable, still dropped
               "T2\tDISEASE 0 5\tlever\n"
               f"T3\tDISEASE {shifted(text, 'anemia', 0)}\tanemia\n")
    corpus = read_ner_corpus(tmp_path, "brat", brat=BratFormat(offset_mismatch="skip"))
    assert counts(corpus) == (0, 2, 0)
    (doc,) = corpus.documents
    assert doc.entities == [Entity("DISEASE", (span(text, "anemia"),))]
    assert [t for _, t in tagged(doc, 0)] == ["O"] * 6 + ["B-DISEASE", "O"]


def test_error_names_the_file_and_line_without_the_text(tmp_path: Path) -> None:
    text = f"{SECRET} en consulta.\n"
    ann = write_pair(tmp_path, "doc", text,
                     f"T1\tPERSON {shifted(text, 'Ionescu', 0)}\tIonescu\n"
                     f"T2\tPERSON {shifted(text, 'Maria', 1)}\tMaria\n")
    with pytest.raises(UserError) as err:
        read_ner_corpus(tmp_path, "brat", brat=BratFormat(offset_mismatch="error"))
    message = str(err.value)
    assert message.startswith(f"{ann}:2: ") and "does not match" in message
    assert not any(part in message for part in SECRET.split())


def test_as_written_keeps_the_written_offsets_and_counts_them(tmp_path: Path) -> None:
    text = "Proteinuria de Bence-Jones y anemia.\n"
    write_pair(tmp_path, "doc", text,
               f"T1\tPROTEINAS {shifted(text, 'Bence-Jones', 1)}\tBence-Jones\n"
               "T2\tDISEASE 0 5\tlever\n"
               f"T3\tDISEASE {shifted(text, 'anemia', 0)}\tanemia\n")
    for brat in (BratFormat(), BratFormat(offset_mismatch="error"), BratFormat(offset_mismatch="skip")):
        corpus = read_ner_corpus(tmp_path, "brat", brat=brat, as_written=True)
        assert counts(corpus) == (0, 0, 2)
        start, end = span(text, "Bence-Jones")
        assert corpus.documents[0].entities == [Entity("PROTEINAS", ((start + 1, end + 1),)),
                                                Entity("DISEASE", ((0, 5),)),
                                                Entity("DISEASE", (span(text, "anemia"),))]
    assert counts(read_ner_corpus(tmp_path, "brat", as_written=True)) == (0, 0, 2)


def test_matching_and_unchecked_annotations_are_untouched(tmp_path: Path) -> None:
    text = "Dolor  abdominal\ty fiebre.\n"
    write_pair(tmp_path, "doc", text,
               f"T1\tDISEASE {span(text, 'Dolor')[0]} {span(text, 'abdominal')[1]}\tDolor abdominal\n"  # spaces differ
               "T2\tDISEASE 1 4\n"                                         # no text to check: kept as written
               f"T3\tDISEASE {shifted(text, 'fiebre', 0)}\tfiebre\r\n")    # CRLF .ann
    corpus = read_ner_corpus(tmp_path, "brat")
    assert counts(corpus) == (0, 0, 0)
    assert corpus.documents[0].entities == [Entity("DISEASE", ((0, 16),)), Entity("DISEASE", ((1, 4),)),
                                            Entity("DISEASE", (span(text, "fiebre"),))]


BROKEN = {
    "offset beyond the text": "T2\tDISEASE 20 999\tfiebre\n",
    "reversed fragment": "T2\tDISEASE 13 8\tfiebre\n",
    "empty fragment": "T2\tDISEASE 8 8\tfiebre\n",
    "malformed line": "T2 DISEASE 8 13 fiebre\n",
}
MODES = {"repair": {"brat": BratFormat()}, "skip": {"brat": BratFormat(offset_mismatch="skip")},
         "error": {"brat": BratFormat(offset_mismatch="error")}, "as written": {"as_written": True}}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_line_is_an_error_in_every_mode(tmp_path: Path, case: str, mode: str) -> None:
    ann = write_pair(tmp_path, "doc", SECRET + "\n", f"T1\tPERSON 0 7\t{SECRET[:7]}\n" + BROKEN[case])
    with pytest.raises(UserError) as err:
        read_ner_corpus(tmp_path, "brat", **MODES[mode])
    assert str(err.value).startswith(f"{ann}:2: ")
    assert not any(part in str(err.value) for part in SECRET.split())


# ----------------------------------------------------------------------------- warnings


@pytest.mark.parametrize("mode", ["repair", "skip", "as written"])
def test_one_warning_per_affected_file_naming_where_never_the_text(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                   mode: str) -> None:
    text = f"Paciente {SECRET} con fiebre.\n"
    write_pair(tmp_path, "a", text,
               f"T1\tDISEASE {shifted(text, 'fiebre', 0)}\tfiebre\n"
               f"T2\tPERSON {shifted(text, 'Maria', 1)}\tMaria\n"          # repairable
               f"T3\tPERSON {shifted(text, 'Ionescu', 2)}\tIonescu\n"      # repairable
               f"T4\tPERSON 0 8\t{SECRET}\n")                             # nowhere near
    write_pair(tmp_path, "b", text, f"T1\tDISEASE {shifted(text, 'fiebre', 0)}\tfiebre\n")  # clean: no warning
    write_pair(tmp_path, "c", text, f"#1\tAnnotatorNotes T1\t{SECRET}\nT1\tPERSON {shifted(text, '2850312', -1)}"
                                    "\t2850312\n")
    kwargs = {"as_written": True} if mode == "as written" else {"brat": BratFormat(offset_mismatch=mode)}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        corpus = read_ner_corpus(tmp_path, "brat", **kwargs)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    a, c = (r.getMessage() for r in records)
    assert a.startswith(f"{tmp_path / 'a.ann'}:2: 3 ") and c.startswith(f"{tmp_path / 'c.ann'}:2: 1 ")
    expected = {"repair": ("repaired 2", "skipped 1"), "skip": ("skipped 3",), "as written": ("kept 3",)}[mode]
    assert all(part in a for part in expected)
    assert counts(corpus) == {"repair": (3, 1, 0), "skip": (0, 4, 0), "as written": (0, 0, 4)}[mode]
    for message in (a, c):
        assert not any(part in message for part in SECRET.split())
