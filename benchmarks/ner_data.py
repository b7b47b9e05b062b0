"""Reading and scoring NER data stay out of the way: a 1M-token column file read, 100k entities scored.

    .venv/bin/python benchmarks/ner_data.py [--tokens 1e6] [--entities 1e5]

Writes a synthetic MoNERo-shaped file into a temporary folder (4 tab-separated columns `token lemma tag POS`,
`#` comments, `-DOCSTART-` every 50 sentences, a 2-column line now and then, bare I- tags after a gap), then
times on one core:
    read      `read_ner` of the file (`tag: 2`, `short_lines: skip`, `discontinuous: join`)
    one doc   the same file as a single document (no marker): flat_spans and tags over one huge document
    score     `corpus_span_scores` of the gold entities of the first documents holding `--entities` of them,
              against predictions (the gold tags' entities, every 7th left out, every 11th a character short)
Target: each under 10 s. Prints the CPU seconds of this process (pinned to one core); exits 1 when a target
is missed.
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

from medtrain.data.ner import Entity, corpus_span_scores, read_ner, tags_to_entities
from medtrain.data.ner_format import ColumnFormat

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
            if previous and rng.random() < 0.3:
                tag = f"I-{previous}"
            elif rng.random() < 0.11:
                previous = rng.choice(TYPES)
                tag = f"B-{previous}" if rng.random() < 0.97 else f"I-{previous}"  # some bare I-
            else:
                tag, previous = "O", ""
            lines.append(f"{word}\t{word}\t{tag}\tNOUN\n")
            written += 1
        lines.append("\n")
        sentence += 1
    path.write_text("".join(lines), encoding="utf-8")


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
             f"(f1 {scores['f1']:.3f})", score_s)]
    for name, seconds in rows:
        print(f"{seconds:7.2f} s CPU  {'ok  ' if seconds < TARGET_S else 'SLOW'}  {name}")
    return 0 if all(seconds < TARGET_S for _, seconds in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
