"""`medtrain analyze`: the measurements that explain why one adapted model beats another.

- tokenizer fertility (subwords per word) and unknown-token rate, per pretraining corpus and per task text, for
  the shared tokenizer and for extra ones (an extended vocabulary: fertility before and after);
- vocabulary and n-gram overlap between each pretraining corpus and each task's text (how much of the task's
  words and word pairs the corpus has seen), and each model's coverage by the union of its pretraining corpora;
- masked-LM perplexity of each model on each task's text, with the model's own tokenizer (masks fixed by the
  seed, so models compare);
- `linkage`: Spearman correlations between the fine-tuning gains and those measures (the study's report).

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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from medtrain.data.corpus import CorpusConfig, CorpusReader
from medtrain.data.ner_format import BratFormat, ColumnFormat
from medtrain.errors import UserError
from medtrain.io import atomic_open, write_json_atomic, write_text_atomic

WORD = re.compile(r"\w+")
BASE = "base"
"""The shared tokenizer's name in the fertility table."""
FEW_ROWS = 8
"""Below this many (variant, task, pair) rows a rank correlation is read as a direction, not as evidence."""


@dataclasses.dataclass
class TaskText:
    """The text of one task's split, e.g. {name: ner_ro, kind: ner, format: brat, path: data/ner/ro/train}."""

    name: str
    kind: Literal["ner", "screening"]
    path: Path
    language: str
    format: Literal["brat", "conll", "conllu", "jsonl", "csv"] = "brat"
    columns: ColumnFormat | None = None
    """How a column (conll) or CoNLL-U file is laid out; None: token first, tag last."""
    brat: BratFormat | None = None
    """How a BRAT folder's annotation slips are read; None: repaired."""
    split: str = "train"
    """Which split this text is (a task's training text, or a test language's test text)."""

    def __post_init__(self) -> None:
        allowed = {"ner": ("brat", "conll", "conllu"), "screening": ("jsonl", "csv")}[self.kind]
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
    """Local Hugging Face masked-LM folders by name, for perplexity on each task's text (empty: skip). Each is
    measured with the tokenizer saved in its folder (an extended vocabulary has other ids), else `tokenizer`."""
    tokenizers: dict[str, Path] = dataclasses.field(default_factory=dict)
    """Extra tokenizers by name (e.g. a variant's extended vocabulary) whose fertility is measured beside the
    shared one's, which is named "base"."""
    mixtures: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Model name -> the corpora (names in `corpora`) its pretraining read, for its coverage of each task text."""
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
        if BASE in self.tokenizers:
            raise ValueError(f"tokenizers: {BASE!r} names the shared `tokenizer`; give the extra one another name")
        known = {c.name for c in self.corpora}
        for model, names in self.mixtures.items():
            if unknown := sorted(set(names) - known):
                raise ValueError(f"mixtures.{model}: {', '.join(unknown)} not among the corpora")


# ----------------------------------------------------------------------------- reading text


def task_texts(task: TaskText, limit: int) -> Iterator[str]:
    """The notes of a task split (NER documents, screening notes)."""
    if task.kind == "ner":
        from medtrain.data.ner import read_ner, synthetic_text

        for doc in read_ner(task.path, task.format, task.columns, task.brat)[:limit]:
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


def _pieces(tokens: list[str], tokenizer: Any) -> list[int]:
    """Subword ids of words already split, so every tokenizer is measured on the same words."""
    return tokenizer(tokens, is_split_into_words=True, add_special_tokens=False)["input_ids"] if tokens else []


def profile(texts: Iterable[str], tokenizer: Any, n: int) -> TextProfile:
    words: Counter[str] = Counter()
    ngrams: Counter[tuple[str, ...]] = Counter()
    n_words = n_pieces = n_unk = documents = 0
    for text in texts:
        documents += 1
        tokens = WORD.findall(text)
        lowered = [t.lower() for t in tokens]
        words.update(lowered)
        ngrams.update(zip(*(lowered[i:] for i in range(n))))
        ids = _pieces(tokens, tokenizer)
        n_words += len(tokens)
        n_pieces += len(ids)
        n_unk += sum(1 for i in ids if i == tokenizer.unk_token_id)
    return TextProfile(words, ngrams, n_pieces / max(n_words, 1), n_unk / max(n_pieces, 1), documents)


def fertility(texts: Iterable[str], tokenizer: Any) -> float:
    """Subwords per word, on the words `profile` counts."""
    n_words = n_pieces = 0
    for text in texts:
        tokens = WORD.findall(text)
        n_words += len(tokens)
        n_pieces += len(_pieces(tokens, tokenizer))
    return n_pieces / max(n_words, 1)


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


def mix_coverage(corpora: Sequence[TextProfile], task: TextProfile) -> float:
    """Share of the task's running words that any of the corpora (a model's pretraining mix) contains."""
    seen: set[str] = set().union(*(c.words for c in corpora))
    return sum(count for word, count in task.words.items() if word in seen) / max(task.words.total(), 1)


def model_tokenizer(model_dir: Path, fallback: Any) -> Any:
    """The tokenizer saved with a model (a variant with an extended vocabulary has ids of its own), else `fallback`."""
    from medtrain.data.tokenizer import load_tokenizer

    has_own = any((model_dir / name).is_file() for name in ("tokenizer.json", "vocab.txt"))
    return load_tokenizer(model_dir) if has_own else fallback


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
    texts = {**{c.name: list(corpus_texts(c, cfg.max_documents)) for c in cfg.corpora},
             **{t.name: list(task_texts(t, cfg.max_documents)) for t in cfg.tasks}}
    profiles = {name: profile(source, tokenizer, cfg.ngram) for name, source in texts.items()}
    corpora, tasks = [c.name for c in cfg.corpora], [t.name for t in cfg.tasks]
    extra = {name: load_tokenizer(path) for name, path in cfg.tokenizers.items()}
    result: dict[str, Any] = {
        "tokenizer": {name: {"fertility": p.fertility, "unk_rate": p.unk_rate, "documents": p.documents}
                      for name, p in profiles.items()},
        "fertility": {BASE: {name: p.fertility for name, p in profiles.items()},
                      **{tok: {name: fertility(source, extra_tokenizer) for name, source in texts.items()}
                         for tok, extra_tokenizer in extra.items()}},
        "overlap": {c: {t: overlap(profiles[c], profiles[t]) for t in tasks} for c in corpora},
        "mix_coverage": {model: {t: mix_coverage([profiles[c] for c in names], profiles[t]) for t in tasks}
                         for model, names in cfg.mixtures.items()},
        "perplexity": {},
    }
    for model_name, model_dir in cfg.models.items():
        own = model_tokenizer(model_dir, tokenizer)
        for task in tasks:
            result["perplexity"].setdefault(model_name, {})[task] = perplexity(model_dir, texts[task], own, cfg)
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
    if len(result["fertility"]) > 1:
        names = list(result["fertility"])
        lines += ["", "## Fertility before and after vocabulary extension (subwords per word)", "",
                  "| text | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for text in result["tokenizer"]:
            lines.append(f"| {text} | " + " | ".join(f"{result['fertility'][k][text]:.3f}" for k in names) + " |")
    tasks = sorted({t for row in result["overlap"].values() for t in row})
    lines += ["", f"## Corpus coverage of each task's words (running words / word {n}-grams)", "",
              "| corpus | " + " | ".join(tasks) + " |", "| --- |" + " ---: |" * len(tasks)]
    for corpus, row in result["overlap"].items():
        cells = [f"{row[t]['token_coverage']:.3f} / {row[t]['ngram_token_coverage']:.3f}" for t in tasks]
        lines.append(f"| {corpus} | " + " | ".join(cells) + " |")
    if result["mix_coverage"]:
        lines += ["", "## Each model's pretraining mix: share of each task's running words its corpora contain", "",
                  "| model | " + " | ".join(tasks) + " |", "| --- |" + " ---: |" * len(tasks)]
        for model, row in result["mix_coverage"].items():
            lines.append(f"| {model} | " + " | ".join(f"{row[t]:.3f}" for t in tasks) + " |")
    if result["perplexity"]:
        lines += ["", "## Masked-LM perplexity on each task's text (lower: the model knows the text better; each "
                  "model with its own tokenizer)", "",
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


# ----------------------------------------------------------------------------- linking to results


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties share their mean rank); None when it means nothing: fewer than 3
    points, or one side constant."""
    from scipy.stats import spearmanr

    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} x values but {len(y)} y values")
    if len(x) < 3 or len(set(x)) == 1 or len(set(y)) == 1:
        return None
    return float(spearmanr(x, y).statistic)


def linkage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the fine-tuning gains go with the measures that should explain them, across (variant, task, pair) rows.

    Each row: "variant", "task", "pair", "gain" (variant minus baseline task metric), "perplexity_change" (variant
    minus baseline perplexity on that task's text) and "coverage" (the variant's mix coverage of that text), all
    numbers. Expected signs if the measures explain the gains: gain vs perplexity change negative (a gain comes
    with a perplexity drop), gain vs coverage positive. With few rows the figures are a direction only: "caveat".
    """
    gains = [r["gain"] for r in rows]
    n = len(rows)
    return {"n": n,
            "gain_vs_perplexity": spearman(gains, [r["perplexity_change"] for r in rows]),
            "gain_vs_coverage": spearman(gains, [r["coverage"] for r in rows]),
            "caveat": f"n < {FEW_ROWS}: {n} rows are too few for a rank correlation to be evidence; read its sign "
                      "as a direction only." if n < FEW_ROWS else None}
