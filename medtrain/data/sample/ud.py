"""MoNERo as Universal Dependencies publishes it (UD_Romanian-SiMoNERo): the ro sample documents in CoNLL-U.

The documents, sentences, tokens and tags are monero.tsv's (shapes.monero_tags); CoNLL-U adds what a reader of
the real release must get right, and every file written has each of them:
    # newdoc id, # sent_id, # text     per document, per sentence; `# text` is the sentence as its document
                                       has it, and the FORMs with SpaceAfter=No rebuild it
    MISC                               `BioNERLabel=B-DISO` (O: no key) beside `SpaceAfter=No`, `|`-joined, `_`
                                       when empty; a discontinuous entity's later part is a bare I- after a gap
    multiword tokens                   a range line (`4-6<TAB>S-a`) before its words, for every Romanian hyphen
                                       contraction (s-a, într-un, ...); a file with none gets one over its first
                                       two tokens written together. The words, not the range, carry the tags
    empty nodes                        `5.1` lines (an elided copula, as enhanced UD writes one) after a word of
                                       EMPTY_NODE_RATE of the sentences, at least one per file: not tokens
The TSV's two-column lines are a slip of that file only: here those tokens are whole. LEMMA is the token
lowercased, UPOS the TSV's POS placeholder, HEAD/DEPREL a flat placeholder tree (the first word the root, every
other word its `dep`), XPOS, FEATS and DEPS `_`: the generator knows no morphology or syntax.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from medtrain.data.sample.shapes import monero_tags, placeholder_pos
from medtrain.data.sample.spans import Phrase, sentence_tokens

EMPTY_NODE_RATE = 0.02
_CONTRACTION = re.compile(r"\b(?:[Ss]|[Îî]ntr|[Dd]intr|[Pp]rintr|[Dd]e)-(?:a|au|o|un)\b")
_EMPTY_NODE = "este\tfi\tAUX\t_\t_\t_\t_\t_\t_"  # FORM to MISC of an empty node: HEAD and DEPREL are `_`


class UdCount(NamedTuple):
    sentences: int
    multiword_tokens: int
    empty_nodes: int


@dataclass
class _Sentence:
    sent_id: str
    text: str
    words: list[tuple[str, str, bool]]    # FORM, tag, whether a space follows it in the document
    ranges: dict[int, int] = field(default_factory=dict)  # a multiword token: its first word -> its last word
    empty_after: int | None = None        # the word an empty node follows

    def free(self) -> list[int]:
        """Words an empty node may follow: not the last (unless alone), not inside a multiword token."""
        inside = {i for first, last in self.ranges.items() for i in range(first, last)}
        return [i for i in range(max(1, len(self.words) - 1)) if i not in inside]


def _sentences(doc_id: str, doc: Phrase) -> list[_Sentence]:
    """The document's sentences as monero.tsv has them, with their spacing and contractions."""
    tags = monero_tags(doc).tags
    sentences = []
    for k, tokens in enumerate(sentence_tokens(doc.text), 1):
        start, end = tokens[0].start(), tokens[-1].end()
        words = [(token.group(), tags.get(token.start(), "O"), after is None or after.start() > token.end())
                 for token, after in zip(tokens, [*tokens[1:], None])]
        sentence = _Sentence(f"{doc_id}-{k}", doc.text[start:end], words)
        for match in _CONTRACTION.finditer(doc.text, start, end):
            inside = [i for i, token in enumerate(tokens) if match.start() <= token.start() < match.end()]
            sentence.ranges[inside[0]] = inside[-1]
        sentences.append(sentence)
    return sentences


def _ensure_range(sentences: Sequence[_Sentence]) -> None:
    """A file with no contraction gets a multiword token over its first two tokens written together."""
    if any(s.ranges for s in sentences):
        return
    for sentence in sentences:
        glued = next((i for i, (_, _, space) in enumerate(sentence.words) if not space), None)
        if glued is not None:
            sentence.ranges[glued] = glued + 1
            return


def _place_empty_nodes(sentences: Sequence[_Sentence], rng: random.Random) -> None:
    for sentence in sentences:
        if rng.random() < EMPTY_NODE_RATE:
            sentence.empty_after = rng.choice(sentence.free())
    if sentences and all(s.empty_after is None for s in sentences):
        sentences[0].empty_after = sentences[0].free()[0]


def _misc(*fields: str | None) -> str:
    return "|".join(f for f in fields if f) or "_"


def _conllu(sentence: _Sentence, newdoc: str | None) -> str:
    lines = [f"# newdoc id = {newdoc}"] if newdoc else []
    lines += [f"# sent_id = {sentence.sent_id}", f"# text = {sentence.text}"]
    in_range: set[int] = set()
    for i, (form, tag, space) in enumerate(sentence.words):
        if i in sentence.ranges:
            last = sentence.ranges[i]
            surface = "".join(word[0] for word in sentence.words[i:last + 1])
            spacing = None if sentence.words[last][2] else "SpaceAfter=No"
            lines.append(f"{i + 1}-{last + 1}\t{surface}\t_\t_\t_\t_\t_\t_\t_\t{_misc(spacing)}")
            in_range.update(range(i, last + 1))
        label = None if tag == "O" else f"BioNERLabel={tag}"
        spacing = None if space or i in in_range else "SpaceAfter=No"  # a range's spacing is on its line
        head, deprel = (0, "root") if i == 0 else (1, "dep")
        lines.append(f"{i + 1}\t{form}\t{form.lower()}\t{placeholder_pos(form)}\t_\t_\t{head}\t{deprel}\t_\t"
                     f"{_misc(label, spacing)}")
        if i == sentence.empty_after:
            lines.append(f"{i + 1}.1\t{_EMPTY_NODE}")
    return "\n".join(lines) + "\n\n"


def monero_conllu(documents: Sequence[tuple[str, Phrase]], rng: random.Random) -> tuple[str, UdCount]:
    """The whole file: `documents` as (newdoc id, document), in order; `rng` places the empty nodes."""
    by_doc = [(doc_id, _sentences(doc_id, doc)) for doc_id, doc in documents]
    every = [sentence for _, sentences in by_doc for sentence in sentences]
    _ensure_range(every)
    _place_empty_nodes(every, rng)
    blocks = [_conllu(sentence, doc_id if k == 0 else None)
              for doc_id, sentences in by_doc for k, sentence in enumerate(sentences)]
    return "".join(blocks), UdCount(len(every), sum(len(s.ranges) for s in every),
                                    sum(s.empty_after is not None for s in every))
