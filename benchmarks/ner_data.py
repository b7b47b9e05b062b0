"""Reading and scoring NER data stay out of the way: 1M tokens read in each format, 100k entities scored.

    .venv/bin/python benchmarks/ner_data.py [--tokens 1e6] [--entities 1e5]

Writes synthetic corpora of about `--tokens` tokens into a temporary folder, then times on one core:
    read      `read_ner` of a MoNERo-shaped column file (4 tab-separated columns `token lemma tag POS`, `#`
              comments, `-DOCSTART-` every 50 sentences, a 2-column line now and then, bare I- tags after a gap;
              `tag: 2`, `short_lines: skip`, `discontinuous: join`)
    one doc   the same file as a single document (no marker): flat_spans and tags over one huge document
    conllu    `read_ner(path, "conllu", ColumnFormat(tag="misc:BioNERLabel"))` of the same kind of corpus as
              UD_Romanian-SiMoNERo publishes it: `# newdoc` every 50 sentences, `# sent_id`, `# text`,
              BioNERLabel in MISC beside SpaceAfter=No, a multiword token (`s-a` = `s`, `-`, `a`) in one
              sentence of 20, FEATS, HEAD and DEPS filled in as UD writes them
    brat      `read_ner_corpus(folder, "brat")` (what `read_ner` runs) of .txt + .ann pairs of about 1,000 tokens
              each, one annotation in 5,000 written one or two characters late: repaired by default
    score     `corpus_span_scores` of the gold entities of the first documents holding `--entities` of them,
              against predictions (the gold tags' entities, every 7th left out, every 11th a character short)
Target: each under 10 s. Prints the CPU seconds of this process (pinned to one core); exits 1 when a target
is missed or a reader stops with an error (printed as its row).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import os
import random
import tempfile
import time

from medtrain.data.ner import Entity, corpus_span_scores, read_ner, read_ner_corpus, tags_to_entities
from medtrain.data.ner_format import ColumnFormat
from medtrain.errors import UserError

TARGET_S = 10.0
TYPES = ("ANAT", "CHEM", "DISO", "PROC")
WORDS = ("pacientul", "prezintă", "durere", "abdominală", "acută", "tratat", "cu", "acid", "acetilsalicilic",
         "ficat", "rinichi", "examen", "ecografic", "normal", "febră", "tuse", ",", ".")


def write_corpus(path: Path, tokens: int, seed: int = 0) -> None:
    """About `tokens` token lines; an entity of 1-3 words every 10 tokens on average."""
    rng = random.Random(seed)
    lines, written, sentence = [], 0, 0
    while written < tokens:
        if sentence % 50 == 0:
            lines.append(f"-DOCSTART-\t-X-\tO\t-X-\n\n# document {sentence // 50}\n")
        previous = ""
        for _ in range(rng.randint(12, 28)):
            word = rng.choice(WORDS)
            if rng.random() < 0.002:
                lines.append(f"{word}\t{word}\n")  # a short line
                continue
            tag, previous = next_tag(rng, previous)
            lines.append(f"{word}\t{word}\t{tag}\tNOUN\n")
            written += 1
        lines.append("\n")
        sentence += 1
    path.write_text("".join(lines), encoding="utf-8")


def next_tag(rng: random.Random, previous: str) -> tuple[str, str]:
    """The next token's tag and the type it continues: entities of 1-3 words, 3% of them a bare I-."""
    if previous and rng.random() < 0.3:
        return f"I-{previous}", previous
    if rng.random() < 0.11:
        previous = rng.choice(TYPES)
        return (f"B-{previous}" if rng.random() < 0.97 else f"I-{previous}"), previous  # some bare I-
    return "O", ""


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    """12-28 (word, tag) pairs."""
    pairs, previous = [], ""
    for _ in range(rng.randint(12, 28)):
        tag, previous = next_tag(rng, previous)
        pairs.append((rng.choice(WORDS), tag))
    return pairs


def write_conllu(path: Path, tokens: int, seed: int = 0) -> None:
    """About `tokens` words as UD_Romanian-SiMoNERo writes them (see the module docstring)."""
    rng = random.Random(seed)
    out, written, number = [], 0, 0
    while written < tokens:
        if number % 50 == 0:
            out.append(f"# newdoc id = doc{number // 50}\n")
        pairs = sentence(rng)
        mwt = rng.randrange(len(pairs)) if number % 20 == 0 else -1
        rows, text, ident = [], [], 1
        for k, (word, tag) in enumerate(pairs):
            glued = k + 1 < len(pairs) and pairs[k + 1][0] in ",."
            misc = "|".join(([] if tag == "O" else [f"BioNERLabel={tag}"]) + (["SpaceAfter=No"] if glued else []))
            forms = [word]
            if k == mwt:  # `s-a` before the word: a range over three words
                rows.append(f"{ident}-{ident + 2}\ts-a\t_\t_\t_\t_\t_\t_\t_\t_\n")
                forms = ["s", "-", "a", word]
                text.append("s-a ")
            for j, form in enumerate(forms):
                label = misc if j == len(forms) - 1 else ""
                rows.append(f"{ident}\t{form}\t{form}\tNOUN\tNcfsrn\tCase=Acc,Nom|Gender=Fem|Number=Sing\t"
                            f"{1 if ident > 1 else 0}\t{'dep' if ident > 1 else 'root'}\t"
                            f"{1 if ident > 1 else 0}:{'dep' if ident > 1 else 'root'}\t{label or '_'}\n")
                ident += 1
            text.append(word + ("" if glued or k + 1 == len(pairs) else " "))
            written += len(forms)
        out.append(f"# sent_id = {number}\n# text = {''.join(text)}\n{''.join(rows)}\n")
        number += 1
    path.write_text("".join(out), encoding="utf-8")


def write_brat_folder(folder: Path, tokens: int, seed: int = 0, per_file: int = 1000) -> int:
    """.txt + .ann pairs of about `per_file` tokens, one sentence a line; every 5,000th annotation is written one
    or two characters late (as PharmaCoNER 2019's slips). Returns how many are late."""
    rng = random.Random(seed)
    folder.mkdir()
    written, files, entity, late = 0, 0, 0, 0
    while written < tokens:
        text, ann, at, in_file = [], [], 0, 0
        while in_file < per_file:
            pairs = sentence(rng)
            spans, start, open_type = [], at, ""
            for word, tag in pairs:
                if tag == f"I-{open_type}":
                    spans[-1][2] = start + len(word)
                elif tag != "O":  # B-, or a bare I- read as B-
                    spans.append([tag[2:], start, start + len(word)])
                open_type = tag[2:]
                start += len(word) + 1
            line = " ".join(word for word, _ in pairs)
            for entity_type, begin, end in spans:
                entity += 1
                shift = 0
                if entity % 5000 == 0:
                    shift, late = 1 + entity // 5000 % 2, late + 1
                surface = line[begin - at:end - at]
                ann.append(f"T{len(ann) + 1}\t{entity_type} {begin + shift} {end + shift}\t{surface}\n")
            text.append(line + "\n")
            at += len(line) + 1
            in_file += len(pairs)
        (folder / f"doc{files:05d}.txt").write_text("".join(text), encoding="utf-8")
        (folder / f"doc{files:05d}.ann").write_text("".join(ann), encoding="utf-8")
        written += in_file
        files += 1
    return late


def timed(job):
    """The result, and the CPU seconds of this process (a shared machine's other load does not count)."""
    start = time.process_time()
    result = job()
    return result, time.process_time() - start


def predictions(docs) -> list[list[Entity]]:
    """The gold tags' entities, every 7th left out and every 11th a character short: a plausible tagger's output."""
    out, k = [], 0
    for doc in docs:
        entities = []
        for sentence in doc.sentences:
            for entity in tags_to_entities(sentence, sentence.tags):
                k += 1
                if k % 7 == 0:
                    continue
                if k % 11 == 0 and entity.end - entity.start > 1:
                    entity = Entity(entity.type, ((entity.start, entity.end - 1),))
                entities.append(entity)
        out.append(entities)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=1e6)
    parser.add_argument("--entities", type=float, default=1e5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    columns = ColumnFormat(tag=2, separator="tab", short_lines="skip", discontinuous="join")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "monero.tsv"
        write_corpus(path, int(args.tokens))
        docs, read_s = timed(lambda: read_ner(path, "conll", columns))
        whole, one_doc_s = timed(lambda: read_ner(path, "conll", ColumnFormat(
            tag=2, separator="tab", document_marker=None, short_lines="skip", discontinuous="join")))
        ud = Path(tmp) / "ro_simonero-ud-train.conllu"
        write_conllu(ud, int(args.tokens))
        ud_row = read_row("read_ner conllu", lambda: read_ner(ud, "conllu", ColumnFormat(tag="misc:BioNERLabel")))
        brat = Path(tmp) / "brat"
        late = write_brat_folder(brat, int(args.tokens))
        brat_row = read_row(f"read_ner brat, {late} annotations late", lambda: read_ner_corpus(brat, "brat"))
    tokens = sum(len(s.words) for d in docs for s in d.sentences)
    gold, pred = [], []
    for doc, predicted in zip(docs, predictions(docs)):  # whole documents until --entities gold entities
        if sum(map(len, gold)) >= args.entities:
            break
        gold.append(doc.entities)
        pred.append(predicted)
    scores, score_s = timed(lambda: corpus_span_scores(gold, pred))
    rows = [(f"read_ner, {tokens} tokens, {len(docs)} documents", read_s),
            (f"read_ner, the same as one document ({len(whole[0].entities)} entities)", one_doc_s),
            (f"corpus_span_scores, {scores['support']} gold and {scores['predicted']} predicted entities "
             f"(f1 {scores['f1']:.3f})", score_s), ud_row, brat_row]
    for name, seconds in rows:
        print(f"{seconds:7.2f} s CPU  {'ok  ' if seconds < TARGET_S else 'SLOW'}  {name}")
    return 0 if all(seconds < TARGET_S for _, seconds in rows) else 1


def read_row(name: str, read) -> tuple[str, float]:
    """A reader's row: tokens, documents, tokens per CPU second and what it repaired; an error is a failed row."""
    try:
        result, seconds = timed(read)
    except UserError as exc:
        return f"{name}: ERROR {exc}", float("inf")
    docs = getattr(result, "documents", result)
    tokens = sum(len(s.words) for d in docs for s in d.sentences)
    repaired = f", {result.repaired} repaired" if hasattr(result, "repaired") else ""
    return f"{name}, {tokens} tokens, {len(docs)} documents, {tokens / seconds:,.0f} tokens/s{repaired}", seconds


if __name__ == "__main__":
    sys.exit(main())
