"""NER corpora in the shapes they are distributed in: MoNERo-like column files (chosen columns, short lines,
discontinuous I-, comments), document markers and folders of files, PharmaCoNER-like BRAT (notes, normalisation
lines, nested entities), label maps into a shared space, exact-offset scores on column documents, and bad input
that names file and line without quoting the text."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from medtrain.data.ner import (
    Entity, NerDocument, corpus_span_scores, read_ner, read_ner_corpus, tags_to_entities, write_brat,
)
from medtrain.data.ner_format import ColumnFormat, LabelConfig, label_overlap
from medtrain.errors import EXIT_USER_ERROR, UserError, run_reporting_errors

SECRET = "Ionescu Maria CNP 2850312"  # stands for patient text that must never reach a message

# MoNERo's shape: token, lemma, tag, POS; tab-separated; a comment; a 2-column line (line 9); "abdominală" is a
# bare I-DISO after a gap, the later part of "durere ... abdominală".
MONERO = (
    "# sent_id = 1\n"                        # 1
    "Pacientul\tpacient\tO\tNOUN\n"          # 2
    "prezintă\tprezenta\tO\tVERB\n"          # 3
    "durere\tdurere\tB-DISO\tNOUN\n"         # 4
    "acută\tacut\tO\tADJ\n"                  # 5
    "abdominală\tabdominal\tI-DISO\tADJ\n"   # 6
    ".\t.\tO\tPUNCT\n"                       # 7
    "\n"                                     # 8
    "Tratat\ttrata\n"                        # 9  (two columns)
    "# a comment inside a sentence\n"        # 10
    "cu\tcu\tO\tADP\n"                       # 11
    "acid\tacid\tB-CHEM\tNOUN\n"             # 12
    "acetilsalicilic\tacetilsalicilic\tI-CHEM\tADJ\n"  # 13
    "\n"
)
MONERO_COLUMNS = {"token": 0, "tag": 2, "separator": "tab", "document_marker": None, "short_lines": "skip"}

PHARMACONER_TEXT = "Se administró ácido acetilsalicílico y proteína C reactiva.\nSin fiebre.\n"
PHARMACONER_ANN = (
    "T1\tNORMALIZABLES 14 36\tácido acetilsalicílico\n"
    "#1\tAnnotatorNotes T1\tcode 387458008\n"
    "N1\tReference T1 SNOMED:387458008\tacetylsalicylic acid\n"
    "T2\tPROTEINAS 39 58\tproteína C reactiva\n"
    "T3\tUNCLEAR 39 47\tproteína\n"           # nested inside T2
    "A1\tNegated T2\n"
    "T4\tNO_NORMALIZABLES 64 70\tfiebre\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def span(doc: NerDocument, word: str, occurrence: int = 0) -> tuple[int, int]:
    """Where a word of the document's text is: located by searching the text, not by the reader's words."""
    assert doc.text is not None
    start = -1
    for _ in range(occurrence + 1):
        start = doc.text.index(word, start + 1)
    return start, start + len(word)


def fragments(doc: NerDocument, *words: str) -> tuple[tuple[int, int], ...]:
    return tuple(span(doc, w) for w in words)


# ----------------------------------------------------------------------------- column files


@pytest.mark.parametrize("policy", ["join", "split"])
def test_monero_shaped_file(tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "monero.tsv", MONERO)
    with caplog.at_level(logging.WARNING, logger="medtrain.data.ner"):
        corpus = read_ner_corpus(path, "conll", ColumnFormat(**MONERO_COLUMNS, discontinuous=policy))
    (doc,) = corpus.documents
    assert (corpus.skipped_lines, corpus.bare_inside) == (1, 1)
    assert "1 lines with fewer than 3 columns skipped" in caplog.text
    assert doc.doc_id == "monero"  # no marker: the file is one document
    assert [[w.text for w in s.words] for s in doc.sentences] == [
        ["Pacientul", "prezintă", "durere", "acută", "abdominală", "."], ["cu", "acid", "acetilsalicilic"]]
    assert doc.text == "Pacientul prezintă durere acută abdominală .\ncu acid acetilsalicilic\n"
    assert all(doc.text[w.start:w.end] == w.text for s in doc.sentences for w in s.words)
    chem = Entity("CHEM", ((span(doc, "acid")[0], span(doc, "acetilsalicilic")[1]),))
    if policy == "join":
        assert doc.entities == [Entity("DISO", fragments(doc, "durere", "abdominală")), chem]
    else:
        assert doc.entities == [Entity("DISO", fragments(doc, "durere")), Entity("DISO", fragments(doc, "abdominală")),
                                chem]
    # either way training sees valid IOB2: the later fragment begins with B-
    assert [s.tags for s in doc.sentences] == [["O", "O", "B-DISO", "O", "B-DISO", "O"], ["O", "B-CHEM", "I-CHEM"]]
    assert [e.source for e in doc.entities][0] == (str(path), 4)


def test_join_attaches_to_the_latest_entity_of_its_type_within_the_sentence(tmp_path: Path) -> None:
    path = write(tmp_path / "x.conll", "a B-X\nb I-Y\nc I-X\nd I-X\n\ne I-X\n")
    (doc,) = read_ner(path, "conll", ColumnFormat(discontinuous="join"))
    x = Entity("X", (span(doc, "a"), (span(doc, "c")[0], span(doc, "d")[1])))  # the fragment c d grows as one
    assert doc.entities == [x, Entity("Y", fragments(doc, "b")), Entity("X", fragments(doc, "e"))]
    assert [s.tags for s in doc.sentences] == [["B-X", "B-Y", "B-X", "I-X"], ["B-X"]]  # no X before e: a new one


def test_the_default_last_column_stops_on_monero_pos_tags(tmp_path: Path) -> None:
    path = write(tmp_path / "monero.tsv", MONERO)
    with pytest.raises(UserError) as err:
        read_ner(path, "conll")
    assert str(err.value) == f"{path}:2: column 3 is not an IOB2 tag (O, B-TYPE or I-TYPE)"


def test_short_lines_are_an_error_unless_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "monero.tsv", MONERO)
    columns = ColumnFormat(**{**MONERO_COLUMNS, "short_lines": "error"})
    with pytest.raises(UserError) as err:
        read_ner(path, "conll", columns)
    assert str(err.value) == f"{path}:9: expected 3 columns, found 2"
    assert err.value.line == 9


def test_separator_decides_what_a_column_is(tmp_path: Path) -> None:
    path = write(tmp_path / "x.tsv", "500 mg\tB-DOSE\nzilnic\tO\n")
    (doc,) = read_ner(path, "conll", ColumnFormat(separator="tab"))
    assert [w.text for w in doc.sentences[0].words] == ["500 mg", "zilnic"]
    assert doc.entities == [Entity("DOSE", fragments(doc, "500 mg"))]
    with pytest.raises(UserError, match=r"x.tsv:1: column 1 is not an IOB2 tag"):
        read_ner(path, "conll", ColumnFormat(separator="space"))  # "500", "mg\tB-DOSE"


def test_document_markers_and_folders_of_files(tmp_path: Path) -> None:
    marked = write(tmp_path / "m.conll", "-DOCSTART- O\n\nGeen O\n# comment\nkoorts B-SYMPTOM\n\n"
                                         "-DOCSTART- O\nTos O\n=== O\nfiebre B-SYMPTOM\n")
    first, second = read_ner(marked, "conll")
    assert (first.doc_id, second.doc_id) == ("m-0000", "m-0001")
    assert first.text == "Geen koorts\n" and second.text == "Tos === fiebre\n"  # `===` is a token, not a marker
    assert second.entities == [Entity("SYMPTOM", fragments(second, "fiebre"))]
    (custom,) = read_ner(marked, "conll", ColumnFormat(document_marker="==="))[1:]
    assert custom.doc_id == "m-0001" and custom.text == "fiebre\n"  # `-DOCSTART-` now is a token of document 0

    folder = tmp_path / "folder"
    write(folder / "b.conll", "Tos O\n\nfiebre B-SYMPTOM\n")
    write(folder / "a.conll", "-DOCSTART- O\nGeen O\n\nkoorts B-SYMPTOM\n")
    write(folder / ".hidden", "not read\n")
    docs = read_ner(folder, "conll", ColumnFormat(document_marker=None))
    assert [(d.doc_id, d.text) for d in docs] == [("a", "-DOCSTART- Geen\nkoorts\n"), ("b", "Tos\nfiebre\n")]
    assert [len(d.sentences) for d in docs] == [2, 2]
    marked_folder = read_ner(folder, "conll")
    assert [d.doc_id for d in marked_folder] == ["a-0000", "b-0000"]


def test_two_files_with_one_document_id_are_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.conll", "x O\n")
    write(tmp_path / "a.tsv", "y O\n")
    with pytest.raises(UserError, match="document id a"):
        read_ner(tmp_path, "conll", ColumnFormat(document_marker=None))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no column files"):
        read_ner(tmp_path / "empty", "conll")
    with pytest.raises(UserError, match="BRAT folder not found"):
        read_ner(tmp_path / "a.conll", "brat")


COLUMN_CASES = {
    "tag column not BIO": ("Geen\tgeen\tO\nkoorts\tkoorts\tX-DRUG\n", {"tag": 2}, 2, "column 2 is not an IOB2 tag"),
    "column past the line": ("Geen O\nkoorts B-X\n", {"token": 3, "tag": 1}, 1, "expected 4 columns, found 2"),
    "shifted text": (f"Geen\tO\n{SECRET}\n", {"separator": "tab"}, 2, "expected 2 columns, found 1"),
    "text in tag column": (f"Geen O x\n{SECRET}\n", {"tag": 1}, 2, "column 1 is not an IOB2 tag"),
    "empty token": ("Geen\tO\n \tO\n", {"separator": "tab"}, 2, "column 0 (the token) is empty"),
    "bad utf-8": ("Geen O\n\n".encode() + b"koorts \xff\n", {}, 3, "not valid UTF-8"),
}


@pytest.mark.parametrize("case", COLUMN_CASES)
def test_bad_column_input_names_file_line_and_column(tmp_path: Path, case: str) -> None:
    content, columns, line, message = COLUMN_CASES[case]
    path = tmp_path / "bad.conll"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as err:
        read_ner(path, "conll", ColumnFormat(**columns))
    assert str(err.value) == f"{path}:{line}: {message}" + (" (O, B-TYPE or I-TYPE)" if "IOB2" in message else "")
    assert not any(part in str(err.value) for part in SECRET.split())


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "monero.tsv", MONERO)
    assert run_reporting_errors(lambda: read_ner(path, "conll", ColumnFormat(tag=2))) == EXIT_USER_ERROR
    assert capsys.readouterr().err == f"error: {path}:9: expected 3 columns, found 2\n"


def test_exact_offset_scores_on_column_documents(tmp_path: Path) -> None:
    path = write(tmp_path / "monero.tsv", MONERO)
    split = read_ner(path, "conll", ColumnFormat(**MONERO_COLUMNS))
    joined = read_ner(path, "conll", ColumnFormat(**MONERO_COLUMNS, discontinuous="join"))

    def predicted(docs: list[NerDocument], tags_of=lambda s: s.tags) -> list[list[Entity]]:
        return [[e for s in d.sentences for e in tags_to_entities(s, tags_of(s))] for d in docs]

    perfect = corpus_span_scores([d.entities for d in split], predicted(split))
    assert (perfect["f1"], perfect["support"], perfect["recall_ceiling"]) == (1.0, 3, 1.0)

    # join: the discontinuous DISO is one gold entity a flat tagger cannot produce; CHEM is still exact
    flat = corpus_span_scores([d.entities for d in joined], predicted(joined))
    assert (flat["support"], flat["predicted"], flat["correct"]) == (2, 3, 1)
    assert flat["recall_ceiling"] == 0.5 and flat["per_type"]["CHEM"]["f1"] == 1.0
    assert flat["per_type"]["DISO"]["correct"] == 0

    # a word short of the entity is wrong under exact offsets
    short = corpus_span_scores([d.entities for d in split],
                               predicted(split, lambda s: [t if w.text != "acetilsalicilic" else "O"
                                                           for w, t in zip(s.words, s.tags)]))
    assert short["per_type"]["CHEM"]["correct"] == 0 and short["per_type"]["DISO"]["correct"] == 2


def test_write_brat_of_a_column_document_keeps_its_text_and_entities(tmp_path: Path) -> None:
    path = write(tmp_path / "monero.tsv", MONERO)
    (doc,) = read_ner(path, "conll", ColumnFormat(**MONERO_COLUMNS, discontinuous="join"))
    write_brat(doc, doc.entities, tmp_path / "out" / f"{doc.doc_id}.ann")
    (back,) = read_ner(tmp_path / "out", "brat")
    assert back.text == doc.text and back.entities == doc.entities  # the discontinuous entity too
    assert [s.tags for s in back.sentences] == [s.tags for s in doc.sentences]


# ----------------------------------------------------------------------------- BRAT


def test_pharmaconer_shaped_brat_reads_with_notes_normalisations_and_nesting(tmp_path: Path) -> None:
    write(tmp_path / "doc.txt", PHARMACONER_TEXT)
    write(tmp_path / "doc.ann", PHARMACONER_ANN)
    (doc,) = read_ner(tmp_path, "brat")
    assert [e.type for e in doc.entities] == ["NORMALIZABLES", "PROTEINAS", "UNCLEAR", "NO_NORMALIZABLES"]
    assert doc.entities[2] == Entity("UNCLEAR", fragments(doc, "proteína"))
    assert [e.source for e in doc.entities] == [(str(tmp_path / "doc.ann"), n) for n in (1, 4, 5, 7)]
    assert doc.sentences[0].tags == ["O", "O", "B-NORMALIZABLES", "I-NORMALIZABLES", "O",
                                     "B-PROTEINAS", "I-PROTEINAS", "I-PROTEINAS", "O"]  # the longer span wins
    assert doc.sentences[1].tags == ["O", "B-NO_NORMALIZABLES", "O"]


def test_entity_equality_ignores_where_it_was_read() -> None:
    a, b = Entity("X", ((0, 1),), ("a.ann", 1)), Entity("X", ((0, 1),), ("b.ann", 9))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert Entity("Y", ((0, 1),), ("a.ann", 1)) != a


# ----------------------------------------------------------------------------- labels


SPANISH = LabelConfig(map={"es": {"NORMALIZABLES": "CHEM", "PROTEINAS": "CHEM", "NO_NORMALIZABLES": "CHEM"},
                           "ro": {"CHEM": "CHEM", "DISO": "DISO"}}, keep=["CHEM", "DISO"])


def test_label_map_renames_drops_and_retags(tmp_path: Path) -> None:
    write(tmp_path / "doc.txt", PHARMACONER_TEXT)
    write(tmp_path / "doc.ann", PHARMACONER_ANN)
    corpus = read_ner_corpus(tmp_path, "brat", labels=SPANISH, language="es")
    (doc,) = corpus.documents
    assert [e.type for e in doc.entities] == ["CHEM", "CHEM", "CHEM"]
    assert corpus.unmapped == {"UNCLEAR": 1} and corpus.dropped == {"UNCLEAR": 1}
    assert corpus.types() == {"CHEM"}
    assert doc.sentences[0].tags == ["O", "O", "B-CHEM", "I-CHEM", "O", "B-CHEM", "I-CHEM", "I-CHEM", "O"]

    # dropping the outer entity uncovers the nested one in the tags
    inner = read_ner_corpus(tmp_path, "brat", labels=LabelConfig(keep=["UNCLEAR"]), language="es")
    assert inner.documents[0].sentences[0].tags == ["O"] * 5 + ["B-UNCLEAR", "O", "O", "O"]
    assert inner.dropped == {"NORMALIZABLES": 1, "PROTEINAS": 1, "NO_NORMALIZABLES": 1} and not inner.unmapped


def test_label_map_on_a_column_file_and_a_language_without_a_map(tmp_path: Path) -> None:
    path = write(tmp_path / "monero.tsv", MONERO)
    columns = ColumnFormat(**MONERO_COLUMNS, discontinuous="join")
    mapped = read_ner_corpus(path, "conll", columns, LabelConfig(map={"ro": {"DISO": "DISEASE"}}), "ro")
    assert [e.type for e in mapped.documents[0].entities] == ["DISEASE", "CHEM"]
    assert mapped.unmapped == {"CHEM": 1}
    assert mapped.documents[0].sentences[0].tags[2] == "B-DISEASE"
    untouched = read_ner_corpus(path, "conll", columns, LabelConfig(map={"es": {"X": "Y"}}, strict=True), "ro")
    assert [e.type for e in untouched.documents[0].entities] == ["DISO", "CHEM"] and not untouched.unmapped


def test_strict_label_map_names_the_file_and_line_of_an_unmapped_type(tmp_path: Path) -> None:
    write(tmp_path / "brat" / "doc.txt", PHARMACONER_TEXT)
    write(tmp_path / "brat" / "doc.ann", PHARMACONER_ANN)
    strict = LabelConfig(map=SPANISH.map, strict=True)
    with pytest.raises(UserError) as err:
        read_ner_corpus(tmp_path / "brat", "brat", labels=strict, language="es")
    assert str(err.value).startswith(f"{tmp_path / 'brat' / 'doc.ann'}:5: entity type UNCLEAR has no entry")
    assert "proteína" not in str(err.value)

    path = write(tmp_path / "monero.tsv", MONERO)
    with pytest.raises(UserError) as err:
        read_ner_corpus(path, "conll", ColumnFormat(**MONERO_COLUMNS),
                        LabelConfig(map={"ro": {"DISO": "DISO"}}, strict=True), "ro")
    assert str(err.value).startswith(f"{path}:12: entity type CHEM has no entry in labels.map.ro")


def test_label_overlap_lists_the_types_training_never_saw() -> None:
    overlap = label_overlap({"CHEM", "DISO"}, {"ro": {"CHEM", "DISO"}, "nl": {"DISO", "PROC", "ANAT"},
                                               "es": {"PROTEINAS"}})
    assert overlap == {"ro": [], "nl": ["ANAT", "PROC"], "es": ["PROTEINAS"]}


# ----------------------------------------------------------------------------- the config dataclasses


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"token": -1}, "columns.token"),
    ({"tag": -2}, "columns.tag"),
    ({"tag": 0}, "same column"),
    ({"separator": "comma"}, "columns.separator"),
    ({"document_marker": ""}, "columns.document_marker"),
    ({"document_marker": "-DOC START-"}, "columns.document_marker"),
    ({"short_lines": "ignore"}, "columns.short_lines"),
    ({"discontinuous": "merge"}, "columns.discontinuous"),
])
def test_column_format_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColumnFormat(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keep": []}, "labels.keep is empty"),
    ({"keep": ["A B"]}, "labels.keep"),
    ({"map": {"es": {}}}, "labels.map.es"),
    ({"map": {"es": {"PROTEINAS": ""}}}, "labels.map.es"),
    ({"map": {"es": "CHEM"}}, "labels.map.es"),
    ({"strict": "yes"}, "labels.strict"),
])
def test_label_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabelConfig(**kwargs)


def test_ner_format_imports_neither_numpy_nor_torch() -> None:
    code = ("import sys, medtrain.data.ner_format; "
            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
