"""Sentences -> model inputs with first-subword labels, and predictions -> word tags.

Windows (`encode`): a sentence whose subwords do not fit `max_length` is split into windows of whole words. Each
window predicts the words after the previous window's last one, preceded by up to `stride_words` words of left
context that carry no label and are not predicted, so every word is predicted exactly once. A `Feature` maps each
token back to its word's index in the sentence (`word_index`); `decode` writes each prediction there. A word the
tokenizer drops entirely (a soft hyphen, a zero-width space) has no token: `decode` lets it continue an entity
that goes on after it, else tags it "O". Predictions are IOB2-repaired.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medtrain.data.ner.entities import Feature, NerDocument, Sentence, repair_iob2
from medtrain.errors import UserError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of specials, continuation subwords and context words: no loss there
DEFAULT_STRIDE_WORDS = 16  # left-context words in the second and later windows of a long sentence




def label_list(docs_by_language: Iterable[list[NerDocument]]) -> list[str]:
    """"O", then B-/I- of every type seen anywhere, by type: one label-id space shared by all languages."""
    types = {
        tag[2:]
        for docs in docs_by_language for doc in docs for sentence in doc.sentences
        for tag in sentence.tags if tag != "O"
    }
    return ["O"] + [f"{prefix}-{t}" for t in sorted(types) for prefix in "BI"]


def encode(sentences: Sequence[Sentence], tokenizer: Any, label2id: Mapping[str, int], max_length: int,
           stride_words: int = DEFAULT_STRIDE_WORDS) -> list[Feature]:
    """Sentences -> features with first-subword labels; long sentences become windows (module docstring).

    A tag missing from `label2id` (a type seen only in a test set) is trained as "O"; the sentences' own tags
    are left untouched, so evaluation still counts that type.
    """
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise UserError(f"max_length {max_length} leaves no room for words after the special tokens")
    pieces = _subword_counts(sentences, tokenizer)
    plan = [(i, *window) for i, counts in enumerate(pieces) for window in _windows(counts, budget, stride_words)]
    batch = tokenizer([[w.text for w in sentences[i].words[context:end]] for i, context, _, end in plan],
                      is_split_into_words=True, truncation=True, max_length=max_length)
    _log_unseen(sentences, label2id)
    return [_feature(sentences[i], i, context, start, batch.word_ids(k), batch["input_ids"][k], label2id)
            for k, (i, context, start, _) in enumerate(plan)]


def _subword_counts(sentences: Sequence[Sentence], tokenizer: Any) -> list[list[int]]:
    """Subwords per word (0 for a word the tokenizer drops entirely, e.g. a lone zero-width character)."""
    batch = tokenizer([[w.text for w in s.words] for s in sentences], is_split_into_words=True,
                      add_special_tokens=False, verbose=False)
    counts = []
    for k, sentence in enumerate(sentences):
        per_word = Counter(batch.word_ids(k))
        counts.append([per_word[j] for j in range(len(sentence.words))])
    return counts


def _windows(pieces: Sequence[int], budget: int, stride_words: int) -> list[tuple[int, int, int]]:
    """(first context word, first predicted word, end) per window; context uses at most half the budget.

    A single word longer than the whole budget gets a window of its own and loses its last subwords to truncation;
    its first subword, which carries its label, stays.
    """
    windows, start = [], 0
    while start < len(pieces):
        context = _context_start(pieces, start, stride_words, budget // 2)
        used, end = sum(pieces[context:start]), start
        while end < len(pieces) and (end == start or used + pieces[end] <= budget):
            used += pieces[end]
            end += 1
        windows.append((context, start, end))
        start = end
    return windows


def _context_start(pieces: Sequence[int], start: int, stride_words: int, limit: int) -> int:
    context, used = start, 0
    while context > 0 and start - context < stride_words and used + pieces[context - 1] <= limit:
        context -= 1
        used += pieces[context]
    return context


def _feature(sentence: Sentence, index: int, context: int, start: int, word_ids: list[int | None],
             input_ids: list[int], label2id: Mapping[str, int]) -> Feature:
    """Labels on each predicted word's first subword; specials, continuations and context words get none."""
    labels, word_index, previous = [], [], None
    outside = label2id["O"]
    for window_word in word_ids:
        word = None if window_word is None else context + window_word
        if word is None or word < start or window_word == previous:
            labels.append(IGNORE_INDEX)
            word_index.append(-1)
        else:
            labels.append(label2id.get(sentence.tags[word], outside))
            word_index.append(word)
        previous = window_word
    return Feature(list(input_ids), labels, word_index, index, start)


def _log_unseen(sentences: Sequence[Sentence], label2id: Mapping[str, int]) -> None:
    unseen = Counter(tag for s in sentences for tag in s.tags if tag not in label2id)
    if unseen:
        log.warning("%d words carry labels outside the label set (%s); trained as O, still evaluated as gold",
                    sum(unseen.values()), ", ".join(sorted(unseen)))


def decode(features: Sequence[Feature], logits_or_pred_ids: Any, id2label: Mapping[int, str] | Sequence[str],
           sentences: Sequence[Sentence]) -> list[list[str]]:
    """Word tags per sentence from each word's first-subword prediction, IOB2-repaired.

    `logits_or_pred_ids` holds one row per feature (padding after the feature's tokens is ignored): logits
    (tokens x labels) or label ids (tokens), as numpy arrays, torch tensors or lists. A word the tokenizer
    drops entirely is never predicted: it continues an entity that goes on after it, else it is "O".
    """
    tags = [["O"] * len(s.words) for s in sentences]
    predicted = [[False] * len(s.words) for s in sentences]
    for feature, row in zip(features, logits_or_pred_ids, strict=True):
        ids = _label_ids(row)
        for position, word in enumerate(feature.word_index):
            if word >= 0:
                tags[feature.sentence_index][word] = id2label[int(ids[position])]
                predicted[feature.sentence_index][word] = True
    return [repair_iob2(_fill_dropped(t, p)) for t, p in zip(tags, predicted)]


def _fill_dropped(tags: list[str], predicted: list[bool]) -> list[str]:
    """A word with no subwords (a soft hyphen, a zero-width space) inside a predicted entity continues it."""
    for j in range(1, len(tags)):
        if predicted[j] or tags[j - 1] == "O":
            continue
        following = next((tags[k] for k in range(j + 1, len(tags)) if predicted[k]), "O")
        if following == f"I-{tags[j - 1][2:]}":
            tags[j] = following
    return tags


def _label_ids(row: Any) -> np.ndarray:
    if hasattr(row, "detach"):  # a torch tensor, possibly bf16 or on a GPU
        row = row.detach().cpu()
        row = (row.float() if row.is_floating_point() else row).numpy()
    row = np.asarray(row)
    return row.argmax(-1) if row.ndim == 2 else row

