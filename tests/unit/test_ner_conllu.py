"""CoNLL-U as UD_Romanian-SiMoNERo publishes MoNERo: tags in MISC beside SpaceAfter=No, offsets into `# text`,
multiword tokens and empty nodes, `# newdoc` documents, discontinuous entities, a tag in a field; bad input that
names file and line without quoting the text; and predictions written back into a copy of the file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medtrain.data.ner import Entity, NerDocument, read_ner, read_ner_corpus, tags_to_entities
from medtrain.data.ner.conllu import write_conllu_predictions
from medtrain.data.ner_format import ColumnFormat
from medtrain.errors import UserError

SECRET = "Ionescu Maria CNP 2850312"  # stands for patient text that must never reach a message
MONERO = ColumnFormat(tag="misc:BioNERLabel", discontinuous="join")


def row(ident: object, form: str, misc: str = "_", xpos: str = "_") -> str:
    """One token line: the ten tab-separated fields, those the reader does not use as UD writes them."""
    return "\t".join([str(ident), form, form.lower(), "X", xpos, "_", "0", "dep", "_", misc]) + "\n"


# Two sentences of one file without `# newdoc`; line numbers on the right.
SIMONERO = (
    "# sent_id = 1\n"                                                        # 1
    "# text = Pacientul prezintă durere acută abdominală.\n"                 # 2
    + row(1, "Pacientul")                                                    # 3
    + row(2, "prezintă")                                                     # 4
    + row(3, "durere", "BioNERLabel=B-DISO")                                 # 5
    + row(4, "acută")                                                        # 6
    + row(5, "abdominală", "SpaceAfter=No|BioNERLabel=I-DISO")               # 7  bare I- after a gap
    + row(6, ".")                                                            # 8
    + "\n"                                                                   # 9
    "# sent_id = 2\n"                                                        # 10
    "# text = Tratat cu acid acetilsalicilic (aspirină).\n"                  # 11
    + row(1, "Tratat")                                                       # 12
    + row(2, "cu")                                                           # 13
    + row(3, "acid", "BioNERLabel=B-CHEM")                                   # 14
    + row(4, "acetilsalicilic", "BioNERLabel=I-CHEM")                        # 15
    + row(5, "(", "SpaceAfter=No")                                           # 16
    + row(6, "aspirină", "BioNERLabel=B-CHEM|SpaceAfter=No")                 # 17
    + row(7, ")", "SpaceAfter=No")                                           # 18
    + row(8, ".")                                                            # 19
    + "\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def surface(doc: NerDocument, entity: Entity) -> list[str]:
    assert doc.text is not None
    return [doc.text[start:end] for start, end in entity.fragments]


def words(doc: NerDocument) -> list[list[str]]:
    return [[w.text for w in s.words] for s in doc.sentences]


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("policy", ["join", "split"])
def test_tags_in_misc_beside_space_after_and_offsets_into_text(tmp_path: Path, policy: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "ro_simonero-ud-test.conllu", SIMONERO)
    with caplog.at_level(logging.WARNING, logger="medtrain.data.ner"):
        corpus = read_ner_corpus(path, "conllu", ColumnFormat(tag="misc:BioNERLabel", discontinuous=policy))
    (doc,) = corpus.documents
    assert doc.doc_id == "ro_simonero-ud-test"
    assert doc.text == "Pacientul prezintă durere acută abdominală.\nTratat cu acid acetilsalicilic (aspirină).\n"
    assert all(doc.text[w.start:w.end] == w.text for s in doc.sentences for w in s.words)
    assert corpus.bare_inside == 1 and "1 I- tags did not continue an entity" in caplog.text
    found = [(e.type, surface(doc, e), e.source) for e in doc.entities]
    chem = [("CHEM", ["acid acetilsalicilic"], (str(path), 14)), ("CHEM", ["aspirină"], (str(path), 17))]
    if policy == "join":  # one DISO entity of two fragments: "durere ... abdominală"
        assert found == [("DISO", ["durere", "abdominală"], (str(path), 5)), *chem]
    else:
        assert found == [("DISO", ["durere"], (str(path), 5)), ("DISO", ["abdominală"], (str(path), 7)), *chem]
    assert [s.tags for s in doc.sentences] == [["O", "O", "B-DISO", "O", "B-DISO", "O"],
                                              ["O", "O", "B-CHEM", "I-CHEM", "O", "B-CHEM", "O", "O"]]


def test_join_attaches_to_the_latest_entity_of_its_type_as_column_files_do(tmp_path: Path) -> None:
    path = write(tmp_path / "x.conllu", "".join(row(i, f, "_" if t == "O" else f"BioNERLabel={t}") for i, (f, t)
                                                 in enumerate(zip("abcd", ["B-X", "I-Y", "I-X", "I-X"]), 1)))
    (doc,) = read_ner(path, "conllu", MONERO)
    assert doc.text == "a b c d\n"  # no `# text`: rebuilt
    assert doc.entities == [Entity("X", ((0, 1), (4, 7))), Entity("Y", ((2, 3),))]


def test_multiword_tokens_and_empty_nodes_are_not_tokens(tmp_path: Path) -> None:
    text = "Febra dintr-un ficat mărit."
    path = write(tmp_path / "mwt.conllu", (
        f"# text = {text}\n"
        + row(1, "Febra", "BioNERLabel=B-DISO")
        + row("2-3", "dintr-un")
        + row(2, "din")
        + row(3, "un")
        + row("3.1", "fost", "BioNERLabel=B-PROC")  # an empty node: not a token, its tag not read
        + row(4, "ficat", "BioNERLabel=B-ANAT")
        + row(5, "mărit", "SpaceAfter=No|BioNERLabel=I-ANAT")
        + row(6, ".")
        + "\n"))
    (doc,) = read_ner(path, "conllu", MONERO)
    assert words(doc) == [["Febra", "din", "un", "ficat", "mărit", "."]]
    din, un = doc.sentences[0].words[1:3]
    mwt = text.index("dintr-un")
    assert (din.start, un.end) == (mwt, mwt + len("dintr-un")) and din.end == un.start  # pieces of its surface
    assert [(e.type, surface(doc, e)) for e in doc.entities] == [("DISO", ["Febra"]), ("ANAT", ["ficat mărit"])]
    assert doc.sentences[0].tags == ["B-DISO", "O", "O", "B-ANAT", "I-ANAT", "O"]

    rebuilt = write(tmp_path / "no-text.conllu", path.read_text(encoding="utf-8").split("\n", 1)[1])
    (same,) = read_ner(rebuilt, "conllu", MONERO)
    assert same.text == text + "\n" and same.entities == doc.entities  # the range's FORM is the surface


def test_newdoc_starts_documents_and_folders_read_in_name_order(tmp_path: Path) -> None:
    one = "# text = Febră.\n" + row(1, "Febră", "SpaceAfter=No|BioNERLabel=B-DISO") + row(2, ".") + "\n"
    two = "# text = Tuse\n" + row(1, "Tuse", "BioNERLabel=B-DISO") + "\n"
    path = write(tmp_path / "folder" / "b.conllu", "# newdoc id = x\n" + one + two + "# newdoc\n" + two)
    write(tmp_path / "folder" / "a.conllu", one)
    write(tmp_path / "folder" / ".hidden.conllu", "not read\n")
    first, second = read_ner(path, "conllu", MONERO)
    assert (first.doc_id, first.text, second.doc_id, second.text) == ("b-0000", "Febră.\nTuse\n", "b-0001", "Tuse\n")
    assert [surface(second, e) for e in second.entities] == [["Tuse"]]
    docs = read_ner(tmp_path / "folder", "conllu", MONERO)
    assert [d.doc_id for d in docs] == ["a", "b-0000", "b-0001"]
    write(tmp_path / "folder" / "b-0000.conllu", one)
    with pytest.raises(UserError, match="two files give the document id b-0000"):
        read_ner(tmp_path / "folder", "conllu", MONERO)


def test_a_tag_in_a_named_field(tmp_path: Path) -> None:
    path = write(tmp_path / "xpos.conllu", "# text = durere acută\n" + row(1, "durere", xpos="B-DISO")
                 + row(2, "acută", xpos="_") + "\n")
    (doc,) = read_ner(path, "conllu", ColumnFormat(tag="xpos"))
    assert [(e.type, surface(doc, e)) for e in doc.entities] == [("DISO", ["durere"])]


def test_forms_not_in_their_text_fall_back_to_the_rebuilt_text(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    slip = (f"# text = {SECRET} are febră\n" + row(1, "Pacienta") + row(2, "are")
            + row(3, "febră", "BioNERLabel=B-DISO"))
    path = write(tmp_path / "slip.conllu", SIMONERO + slip + "\n" + slip)
    with caplog.at_level(logging.WARNING, logger="medtrain.data.ner"):
        (doc,) = read_ner(path, "conllu", MONERO)
    assert doc.text.endswith("(aspirină).\nPacienta are febră\nPacienta are febră\n")  # the good `# text`s kept
    assert [surface(doc, e) for e in doc.entities][-2:] == [["febră"], ["febră"]]
    (warning,) = [r.getMessage() for r in caplog.records if "# text" in r.getMessage()]
    assert warning.startswith(f"{path}:22: 2 sentences whose FORMs are not in their `# text`")
    assert not any(part in caplog.text for part in SECRET.split())


def test_short_lines_are_an_error_unless_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = SIMONERO.splitlines(keepends=True)
    lines[5] = f"4\t{SECRET}\tX\n"  # line 6: three fields
    path = write(tmp_path / "short.conllu", "".join(lines))
    with pytest.raises(UserError) as err:
        read_ner(path, "conllu", MONERO)
    assert (err.value.path, err.value.line) == (str(path), 6)
    assert err.value.message == "a CoNLL-U token line needs 10 tab-separated fields, found 3"
    with caplog.at_level(logging.WARNING, logger="medtrain.data.ner"):
        corpus = read_ner_corpus(path, "conllu", ColumnFormat(tag="misc:BioNERLabel", short_lines="skip"))
    assert corpus.skipped_lines == 1 and "1 token lines without 10 fields skipped" in caplog.text
    assert words(corpus.documents[0])[0] == ["Pacientul", "prezintă", "durere", "abdominală", "."]


BAD = {  # content, tag place, line, message
    "not IOB2 in MISC": (row(1, "Pacienta") + row(2, "X", f"BioNERLabel={SECRET.split()[0]}"), "misc:BioNERLabel", 2,
                         "MISC BioNERLabel is not an IOB2 tag (O, B-TYPE or I-TYPE)"),
    "BIOES in MISC": (row(1, SECRET, "BioNERLabel=S-DISO"), "misc:BioNERLabel", 1,
                      "MISC BioNERLabel is not an IOB2 tag (O, B-TYPE or I-TYPE)"),
    "not IOB2 in a field": (row(1, SECRET, xpos="Ncfsrn"), "xpos", 1, "XPOS is not an IOB2 tag (O, B-TYPE or I-TYPE)"),
    "eleven fields": (row(1, "a") + row(2, "b", f"_\t{SECRET}"), "misc:BioNERLabel", 2,
                      "a CoNLL-U token line needs 10 tab-separated fields, found 11"),
    "bad ID": (row(1, "a") + row("2a", SECRET), "misc:BioNERLabel", 2,
               "ID is not a word number (3), a multiword range (3-4) or an empty node (3.1)"),
    "empty FORM": (row(1, ""), "misc:BioNERLabel", 1, "FORM is empty"),
    "CoNLL-U Plus": ("# global.columns = ID FORM MISC\n", "misc:BioNERLabel", 1,
                     "CoNLL-U Plus columns other than the ten of CoNLL-U are not supported"),
    "bad utf-8": (row(1, "a") + "\n" + row(1, "b\udcff"), "misc:BioNERLabel", 3, "not valid UTF-8"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_names_file_and_line_without_the_text(tmp_path: Path, case: str) -> None:
    content, tag, line, message = BAD[case]
    path = tmp_path / "bad.conllu"
    path.write_bytes(f"# text = {SECRET}\n{content}".encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError) as err:
        read_ner(path, "conllu", ColumnFormat(tag=tag))
    assert (err.value.path, err.value.line, err.value.message) == (str(path), line + 1, message)
    assert not any(part in str(err.value) for part in SECRET.split())


def test_the_tag_place_and_the_path_must_fit_conllu(tmp_path: Path) -> None:
    path = write(tmp_path / "x.conllu", SIMONERO)
    with pytest.raises(ValueError, match="columns.tag for CoNLL-U must be misc:KEY"):
        ColumnFormat(tag="lemmas")
    with pytest.raises(UserError) as err:
        read_ner(path, "conllu")  # the column files' default tag, -1
    assert err.value.path == str(path) and "columns.tag: misc:KEY" in err.value.message
    write(tmp_path / "empty" / "e.conllu", "# only a comment\n\n")
    for where, message in [(tmp_path / "empty" / "e.conllu", "no sentences in this CoNLL-U file"),
                           (tmp_path / "empty", "no sentences in these files"),
                           (tmp_path / "none", "CoNLL-U file not found")]:
        with pytest.raises(UserError, match=message):
            read_ner(where, "conllu", MONERO)
    (tmp_path / "bare").mkdir()
    with pytest.raises(UserError, match="no CoNLL-U files in this folder"):
        read_ner(tmp_path / "bare", "conllu", MONERO)


# ----------------------------------------------------------------------------- predictions written back


def test_predictions_change_only_the_tag_key(tmp_path: Path) -> None:
    extra = row(7, "Ion", "_\tmore") + row("5.1", "e", "BioNERLabel=B-X")  # 11 fields (skipped), an empty node
    source = write(tmp_path / "test.conllu", "# newdoc id = d\n" + SIMONERO.replace(row(6, "."), row(6, ".") + extra))
    columns = ColumnFormat(tag="misc:BioNERLabel", short_lines="skip")
    (doc,) = read_ner(source, "conllu", columns)
    predicted = [["B-PROC", "O", "O", "B-DISO", "I-DISO", "O"], ["O"] * 4 + ["B-PROC", "I-PROC", "I-PROC", "O"]]
    out = tmp_path / "predictions" / "test.conllu"
    write_conllu_predictions(source, columns, predicted, out)
    before, after = source.read_text(encoding="utf-8").split("\n"), out.read_text(encoding="utf-8").split("\n")
    assert len(before) == len(after)
    changed = {n: (a.split("\t"), b.split("\t")) for n, (a, b) in enumerate(zip(before, after), 1) if a != b}
    assert all(a[:9] == b[:9] for a, b in changed.values())  # only MISC changes
    assert {n: (a[9], b[9]) for n, (a, b) in changed.items()} == {
        4: ("_", "BioNERLabel=B-PROC"),                                      # appended where absent
        6: ("BioNERLabel=B-DISO", "_"),                                      # O removes the key
        7: ("_", "BioNERLabel=B-DISO"),
        17: ("BioNERLabel=B-CHEM", "_"),
        18: ("BioNERLabel=I-CHEM", "_"),
        19: ("SpaceAfter=No", "SpaceAfter=No|BioNERLabel=B-PROC"),           # beside the other keys
        20: ("BioNERLabel=B-CHEM|SpaceAfter=No", "BioNERLabel=I-PROC|SpaceAfter=No"),  # replaced in place
        21: ("SpaceAfter=No", "SpaceAfter=No|BioNERLabel=I-PROC"),
    }
    (back,) = read_ner(out, "conllu", columns)
    expected = [e for s, tags in zip(doc.sentences, predicted) for e in tags_to_entities(s, tags)]
    assert back.text == doc.text and back.entities == expected


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_gold_tags_written_back_give_the_same_bytes(tmp_path: Path, newline: str) -> None:
    canonical = SIMONERO.replace("BioNERLabel=I-DISO", "BioNERLabel=B-DISO")  # IOB2 as sentence_tags derives it
    source = tmp_path / "gold.conllu"
    source.write_bytes(b"\xef\xbb\xbf" + ("# newdoc\n" + canonical + row("1-2", "x") + "\n").replace(
        "\n", newline).encode())
    (doc,) = read_ner(source, "conllu", MONERO)
    write_conllu_predictions(source, MONERO, [s.tags for s in doc.sentences], tmp_path / "out.conllu")
    assert (tmp_path / "out.conllu").read_bytes() == source.read_bytes()


def test_predictions_in_a_field_and_tags_that_do_not_fit(tmp_path: Path) -> None:
    source = write(tmp_path / "x.conllu", row(1, "durere", xpos="B-DISO") + row(2, "acută", xpos="_") + "\n")
    columns = ColumnFormat(tag="xpos")
    write_conllu_predictions(source, columns, [["O", "B-DISO"]], tmp_path / "out.conllu")
    assert (tmp_path / "out.conllu").read_text(encoding="utf-8") == (row(1, "durere", xpos="O")
                                                                     + row(2, "acută", xpos="B-DISO") + "\n")
    for tags, message in [([["O"]], "1 tags for 2 words"), ([["O", "O"], ["O"]], "2 tag lists for the 1 sentences"),
                          ([["O", "E-DISO"]], "not IOB2")]:
        with pytest.raises(ValueError, match=message):
            write_conllu_predictions(source, columns, tags, tmp_path / "bad.conllu")
    assert not (tmp_path / "bad.conllu").exists()
