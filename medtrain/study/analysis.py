"""`medtrain analyze`: the measurements that explain why one adapted model beats another.

- tokenizer fertility (subwords per word) and unknown-token rate, per pretraining corpus and per task text;
- vocabulary and n-gram overlap between each pretraining corpus and each task's text (how much of the task's
  words and word pairs the corpus has seen);
- masked-LM perplexity of each model on each task's text (with masks fixed by the seed, so models compare).

Everything is counted on at most `max_documents` documents per source, so it runs in seconds on CPU. Only
numbers are written (analysis.json, analysis.md, PNG plots): never text from the notes. torch is imported
only to measure perplexity, so the config loads without it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from medtrain.data.corpus import CorpusConfig, CorpusReader
from medtrain.data.ner_format import ColumnFormat
from medtrain.errors import UserError
from medtrain.io import atomic_open, write_json_atomic, write_text_atomic

WORD = re.compile(r"\w+")


@dataclasses.dataclass
class TaskText:
    """The text of one task's split, e.g. {name: ner_ro, kind: ner, format: brat, path: data/ner/ro/train}."""

    name: str
    kind: Literal["ner", "screening"]
    path: Path
    language: str
    format: Literal["brat", "conll", "jsonl", "csv"] = "brat"
    columns: ColumnFormat | None = None
    """How a column (conll) file is laid out; None: token first, tag last."""

    def __post_init__(self) -> None:
        allowed = {"ner": ("brat", "conll"), "screening": ("jsonl", "csv")}[self.kind]
        if self.format not in allowed:
            raise ValueError(f"format {self.format!r} does not fit a {self.kind} task (use {' or '.join(allowed)})")


@dataclasses.dataclass
class AnalyzeConfig:
    output_dir: Path
    tokenizer: Path
    """The tokenizer the compared models share (a local folder)."""
    corpora: list[CorpusConfig]
    """Pretraining corpora, as in `medtrain prepare`."""
    tasks: list[TaskText]
    models: dict[str, Path] = dataclasses.field(default_factory=dict)
    """Local Hugging Face masked-LM folders by name, for perplexity on each task's text (empty: skip)."""
    max_documents: int = 300
    """Documents (notes) read per source: enough for stable rates, small enough for seconds."""
    ngram: int = 2
    seq_len: int = 128
    perplexity_sequences: int = 64
    """Sequences of seq_len tokens per task on which each model's masked-LM loss is measured."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_documents < 1 or self.ngram < 1 or self.seq_len < 8 or self.perplexity_sequences < 1:
            raise ValueError("max_documents, ngram, perplexity_sequences must be >= 1 and seq_len >= 8")


# ----------------------------------------------------------------------------- reading text


def task_texts(task: TaskText, limit: int) -> Iterator[str]:
    """The notes of a task split (NER documents, screening notes)."""
    if task.kind == "ner":
        from medtrain.data.ner import read_ner, synthetic_text

        for doc in read_ner(task.path, task.format, task.columns)[:limit]:
            yield doc.text if doc.text is not None else synthetic_text(doc)
    else:
        from medtrain.data.documents import read_notes

        for note in read_notes(task.path, task.format)[:limit]:
            yield note.text


def corpus_texts(corpus: CorpusConfig, limit: int) -> Iterator[str]:
    reader = CorpusReader(corpus, corpus.path)
    reader.check()
    for document in itertools.islice(reader, limit):
        yield document.text


# ----------------------------------------------------------------------------- measures


@dataclasses.dataclass
class TextProfile:
    """What is measured once per source and then compared pairwise."""

    words: Counter[str]
    ngrams: Counter[tuple[str, ...]]
    fertility: float
    unk_rate: float
    documents: int


def profile(texts: Iterator[str], tokenizer: Any, n: int) -> TextProfile:
    words: Counter[str] = Counter()
    ngrams: Counter[tuple[str, ...]] = Counter()
    n_words = n_pieces = n_unk = documents = 0
    for text in texts:
        documents += 1
        tokens = WORD.findall(text)
        if not tokens:
            continue
        lowered = [t.lower() for t in tokens]
        words.update(lowered)
        ngrams.update(zip(*(lowered[i:] for i in range(n))))
        ids = tokenizer(tokens, is_split_into_words=True, add_special_tokens=False)["input_ids"]
        n_words += len(tokens)
        n_pieces += len(ids)
        n_unk += sum(1 for i in ids if i == tokenizer.unk_token_id)
    return TextProfile(words, ngrams, n_pieces / max(n_words, 1), n_unk / max(n_pieces, 1), documents)


def overlap(corpus: TextProfile, task: TextProfile) -> dict[str, float]:
    """Shares of the task's vocabulary (types), running words (tokens) and n-grams that the corpus contains."""

    def coverage(seen: Counter, wanted: Counter) -> tuple[float, float]:
        covered = [k for k in wanted if k in seen]
        return (len(covered) / max(len(wanted), 1),
                sum(wanted[k] for k in covered) / max(sum(wanted.values()), 1))

    types, tokens = coverage(corpus.words, task.words)
    ngram_types, ngram_tokens = coverage(corpus.ngrams, task.ngrams)
    return {"type_coverage": types, "token_coverage": tokens, "ngram_type_coverage": ngram_types,
            "ngram_token_coverage": ngram_tokens}


def perplexity(model_dir: Path, texts: list[str], tokenizer: Any, cfg: AnalyzeConfig) -> float:
    """Masked-LM perplexity on the task's text packed into [CLS] + seq_len-1 token sequences, masks fixed by seed."""
    import torch
    from transformers import BertForMaskedLM

    from medtrain.data.masking import Masker, batch_generator
    from medtrain.model import MaskedLM, load_pretrained

    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id])
    body = cfg.seq_len - 1
    rows = [[tokenizer.cls_token_id] + ids[i:i + body] for i in range(0, len(ids) - body + 1, body)]
    rows = rows[:cfg.perplexity_sequences]
    if not rows:
        raise UserError(f"task text has fewer than {cfg.seq_len} tokens: too little to measure perplexity")
    special = {name: getattr(tokenizer, f"{name}_token_id") for name in ("cls", "sep", "pad", "mask", "unk")}
    masker = Masker(len(tokenizer), special)
    try:
        model = MaskedLM(load_pretrained(BertForMaskedLM, model_dir)).eval()
    except OSError as exc:
        raise UserError(f"cannot load a masked-LM model ({exc.__class__.__name__})", model_dir) from None
    total = count = 0.0
    with torch.no_grad():
        for index in range(0, len(rows), 16):
            batch = torch.tensor(rows[index:index + 16], dtype=torch.long)
            masked = masker(batch, batch_generator(cfg.seed, 0, index))
            total += model(*masked).item() * masked.num_masked
            count += masked.num_masked
    return math.exp(total / count)


# ----------------------------------------------------------------------------- report


def analyze(cfg: AnalyzeConfig) -> dict[str, Any]:
    """Measure, then write analysis.json, analysis.md and PNG plots into cfg.output_dir."""
    from medtrain.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer)
    corpora = {c.name: profile(corpus_texts(c, cfg.max_documents), tokenizer, cfg.ngram) for c in cfg.corpora}
    tasks = {t.name: profile(task_texts(t, cfg.max_documents), tokenizer, cfg.ngram) for t in cfg.tasks}
    result: dict[str, Any] = {
        "tokenizer": {name: {"fertility": p.fertility, "unk_rate": p.unk_rate, "documents": p.documents}
                      for name, p in {**corpora, **tasks}.items()},
        "overlap": {c: {t: overlap(corpora[c], tasks[t]) for t in tasks} for c in corpora},
        "perplexity": {},
    }
    for task in cfg.tasks:
        texts = list(task_texts(task, cfg.max_documents))
        for model_name, model_dir in cfg.models.items():
            result["perplexity"].setdefault(model_name, {})[task.name] = perplexity(model_dir, texts, tokenizer, cfg)
    out = cfg.output_dir
    write_json_atomic(out / "analysis.json", result)
    write_text_atomic(out / "analysis.md", markdown(result, cfg.ngram))
    plot(result, out)
    return result


def markdown(result: dict[str, Any], n: int) -> str:
    lines = ["## Tokenizer fertility and unknown tokens", "", "| text | documents | subwords per word | [UNK] rate |",
             "| --- | ---: | ---: | ---: |"]
    for name, row in result["tokenizer"].items():
        lines.append(f"| {name} | {row['documents']} | {row['fertility']:.3f} | {row['unk_rate']:.4f} |")
    tasks = sorted({t for row in result["overlap"].values() for t in row})
    lines += ["", f"## Corpus coverage of each task's words (running words / word {n}-grams)", "",
              "| corpus | " + " | ".join(tasks) + " |", "| --- |" + " ---: |" * len(tasks)]
    for corpus, row in result["overlap"].items():
        cells = [f"{row[t]['token_coverage']:.3f} / {row[t]['ngram_token_coverage']:.3f}" for t in tasks]
        lines.append(f"| {corpus} | " + " | ".join(cells) + " |")
    if result["perplexity"]:
        lines += ["", "## Masked-LM perplexity on each task's text (lower: the model knows the text better)", "",
                  "| model | " + " | ".join(tasks) + " |", "| --- |" + " ---: |" * len(tasks)]
        for model, row in result["perplexity"].items():
            lines.append(f"| {model} | " + " | ".join(f"{row[t]:.1f}" for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], out: Path) -> None:
    """overlap.png (corpus x task token coverage) and perplexity.png (model x task), as heatmaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def heatmap(rows: dict[str, dict[str, float]], title: str, path: Path) -> None:
        row_names = list(rows)
        cols = sorted({c for r in rows.values() for c in r})
        values = [[rows[r][c] for c in cols] for r in row_names]
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(cols), 1.2 + 0.45 * len(row_names)))
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(row_names)), row_names)
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}" if value < 10 else f"{value:.0f}", ha="center", va="center",
                        color="white", fontsize=8)
        fig.colorbar(image, ax=ax)
        ax.set_title(title)
        fig.tight_layout()
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)

    coverage = {c: {t: v["token_coverage"] for t, v in row.items()} for c, row in result["overlap"].items()}
    heatmap(coverage, "share of task words seen in corpus", out / "overlap.png")
    if result["perplexity"]:
        heatmap(result["perplexity"], "masked-LM perplexity on task text", out / "perplexity.png")
