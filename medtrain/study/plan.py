"""A study resolved: every path it writes and every stage's own config (prepare, each pretraining run, each
task's fine-tuning data), built, and so validated, before anything runs. The stages and the report read it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medtrain.config import apply_override, build_config, config_to_dict, read_yaml, resolve_config_path
from medtrain.data.corpus import CorpusConfig
from medtrain.data.pack import PrepareConfig
from medtrain.errors import UserError
from medtrain.finetune.config import DataConfig, Source
from medtrain.pretrain import PretrainConfig
from medtrain.study.config import BASELINE, EVALUATION_SPLITS, PretrainRun, StudyConfig, TaskConfig

Say = Callable[[str], None]
"""Where progress lines go (print by default)."""
PATIENT_FIELD = "patient_id"
"""The record field naming a patient, in screening files and (when it is there) in corpus records."""
SCREENING_FORMATS = ("jsonl", "csv")


def _flat(overrides: dict[str, Any], prefix: str = "") -> list[tuple[list[str], Any]]:
    """{a: {b: 1}, c.d: 2} -> [([a, b], 1), ([c, d], 2)]: nested mappings merge, as k=v overrides do."""
    out = []
    for key, value in overrides.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out += _flat(value, dotted)
        else:
            out.append((dotted.split("."), value))
    return out


def _recipe(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    data, _ = read_yaml(resolve_config_path(name))
    for keys, value in _flat(overrides):
        apply_override(data, keys, value)
    return data


def _under(root: Path, path: Path | str) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def _build_prepare(data: dict[str, Any]) -> PrepareConfig:
    try:
        return build_config(PrepareConfig, data)
    except UserError as exc:
        raise UserError(f"prepare: {exc.message}") from None


def _has_field(corpus: CorpusConfig, path: Path, field: str) -> bool:
    """Whether a corpus's records carry `field`, judged cheaply: a JSONL corpus's first non-empty record, a
    Parquet corpus's schema. Plain text has no fields; a missing file or a saved dataset is judged not to (give
    prepare.exclude its own `by` for one)."""
    fmt = corpus.format if corpus.format != "auto" else \
        {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}.get(path.suffix.lower())
    try:
        if fmt == "jsonl":
            with open(path, encoding="utf-8", errors="replace") as f:
                first = next((line for line in f if line.strip()), "")
            record = json.loads(first) if first else None
            return isinstance(record, dict) and field in record
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return field in pq.read_schema(path).names
    except (OSError, ValueError):
        return False
    return False


class Study:
    """Every path and resolved config of a study, built (and so validated) before anything runs."""

    def __init__(self, cfg: StudyConfig):
        self.cfg = cfg
        self.out = cfg.output_dir
        self.shards = self.out / "shards"
        self.grid_file = self.out / "grid.yaml"
        self.grid_dir = self.out / "grid"
        self.analysis_dir = self.out / "analysis"
        self.report = self.out / "report.md"
        self.tasks = {t.name: self._task_data(t) for t in cfg.tasks}
        """Task name -> its fine-tuning config as plain data (before prepare: the exclusion reads the tasks)."""
        self.prepare = self._prepare_config()
        self.corpus_names = [c.name for c in self.prepare.corpora]
        self.replicates = {BASELINE: [BASELINE], **{v: self._replicate_names(v) for v in self._ordered_variants()}}
        """Model (baseline or variant) -> its pretraining replicates, parents before children."""
        self.model_of = {r: m for m, names in self.replicates.items() for r in names}
        baseline = cfg.baseline.model or self.pretrain_dir(BASELINE) / "export"
        self.models = {BASELINE: baseline, **{r: self.pretrain_dir(r) / "export" for r in self.model_of
                                              if r != BASELINE}}
        """Replicate -> its Hugging Face folder: the grid's model axis."""
        self.pretrain = {**({BASELINE: self._pretrain_config(BASELINE, cfg.baseline.pretrain, None)}
                            if cfg.baseline.pretrain else {}),
                         **{r: self._pretrain_config(r, cfg.variants[m], seed)
                            for m, names in self.replicates.items() if m != BASELINE
                            for r, seed in zip(names, cfg.pretrain_seeds or [None])}}
        """Replicate -> its pretraining config, in the order they must run."""

    def _ordered_variants(self) -> list[str]:
        """Variants with every parent before its children (the config has checked there is no cycle)."""
        ordered: list[str] = []
        for name in self.cfg.variants:
            ordered += [v for v in self.cfg.lineage(name) if v not in ordered]
        return ordered

    def _replicate_names(self, variant: str) -> list[str]:
        seeds = self.cfg.pretrain_seeds
        return [f"{variant}-seed{s}" for s in seeds] if seeds else [variant]

    def parent(self, replicate: str) -> str:
        """The replicate this one continues from: the parent model's replicate with the same seed."""
        model = self.model_of[replicate]
        start = self.cfg.variants[model].start
        return self.replicates[start][self.replicates[model].index(replicate)] if start != BASELINE else BASELINE

    def extension_owner(self, model: str) -> str | None:
        """The nearest model in `model`'s lineage (itself included) that extends the vocabulary, if any: its
        tokenizer is the one this model's shards are tokenized with."""
        return next((v for v in reversed(self.cfg.lineage(model)) if self.cfg.variants[v].vocabulary), None)

    def vocabulary_dir(self, variant: str) -> Path:
        """The extended tokenizer of a variant with `vocabulary:` (+ vocabulary_extension.json)."""
        return self.out / "vocabulary" / variant

    def shards_for(self, model: str) -> Path:
        """The shards this model's pretraining reads: tokenized with its lineage's (possibly extended) tokenizer."""
        owner = self.extension_owner(model) if model != BASELINE else None
        return self.shards if owner is None else self.out / f"shards-{owner}"

    def tokenizer_for(self, model: str) -> Path:
        """The tokenizer a model's pretraining data is tokenized with."""
        owner = self.extension_owner(model) if model != BASELINE else None
        return Path(self.prepare.tokenizer) if owner is None else self.vocabulary_dir(owner)

    def pretrain_dir(self, name: str) -> Path:
        return self.out / "pretrain" / name

    def split(self, task: TaskConfig, lang: str, split: str) -> Path:
        """The path of one language's split, under data_dir."""
        source = task.source(lang, split)
        return _under(self.cfg.data_dir, source if isinstance(source, str) else source.path)

    def split_source(self, task: TaskConfig, lang: str, split: str) -> str | dict[str, Any]:
        """One language's split as a fine-tuning data entry: a path, or {path, format, columns, ...}."""
        source = task.source(lang, split)
        if isinstance(source, str):
            return str(self.split(task, lang, split))
        given = {k: v for k, v in config_to_dict(source).items() if v is not None}
        return {**given, "path": str(self.split(task, lang, split))}

    def reading(self, task: TaskConfig, lang: str, split: str) -> Source:
        """How one language's split is read (path, format, columns), resolved against the task recipe's data."""
        entry = self.split_source(task, lang, split)
        data = {**self.tasks[task.name]["data"], **{s: {lang: entry} for s in ("train", "dev", "test")}}
        try:
            return build_config(DataConfig, data).source("train", lang)
        except UserError as exc:
            raise UserError(f"task {task.name}: {exc.message}") from None

    def _prepare_config(self) -> PrepareConfig:
        """prepare's config: the study's prepare section, its shards folder, and unless the section has an
        `exclude` of its own (used as given) or decontaminate is false, the exclusion of every task's dev and
        test text (`exclude_section`)."""
        data = {**self.cfg.prepare, "output_dir": str(self.shards)}
        data.setdefault("data_root", str(self.cfg.data_dir))
        tokenizer = data.get("tokenizer") or self.cfg.baseline.model
        if tokenizer is None:
            raise UserError("prepare.tokenizer is required when the baseline is pretrained here")
        data["tokenizer"] = str(_under(self.cfg.data_dir, tokenizer) if "tokenizer" in self.cfg.prepare
                                else tokenizer)
        prepare = _build_prepare(data)
        if "exclude" in self.cfg.prepare or not self.cfg.decontaminate:
            return prepare
        return _build_prepare({**data, "exclude": self.exclude_section(prepare)})

    def exclude_section(self, prepare: PrepareConfig) -> dict[str, Any]:
        """prepare's `exclude` as plain data: one source per task, language the task reads and evaluation split,
        named <task>/<lang>/<split>, read as fine-tuning reads it, its path absolute; a path two tasks share is
        listed once, under the first task's name. A split the study reads (the dev set of a training language,
        the test set of a test language) is always listed, so a missing one is an error; another language's dev
        or test set only where it exists. `by: [patient_id]` when a screening source is listed and a corpus's
        records carry that field (`_has_field`)."""
        sources: list[dict[str, Any]] = []
        seen: set[str] = set()
        for task in self.cfg.tasks:
            for lang in dict.fromkeys(task.train_languages + task.test_languages):
                for split in EVALUATION_SPLITS:
                    path = Path(os.path.abspath(self.split(task, lang, split)))
                    read = lang in (task.train_languages if split == "dev" else task.test_languages)
                    if str(path) in seen or not (read or path.exists()):
                        continue
                    seen.add(str(path))
                    source = self.reading(task, lang, split)
                    sources.append({"path": str(path), "format": source.format, "name": f"{task.name}/{lang}/{split}",
                                    **({"columns": config_to_dict(source.columns)} if source.columns else {}),
                                    **({"brat": config_to_dict(source.brat)} if source.brat else {})})
        patients = any(s["format"] in SCREENING_FORMATS for s in sources) and \
            any(_has_field(c, prepare.corpus_path(c), PATIENT_FIELD) for c in prepare.corpora)
        return {"sources": sources, "by": [PATIENT_FIELD] if patients else []}

    def _pretrain_config(self, name: str, run: PretrainRun, seed: int | None) -> PretrainConfig:
        """One replicate's pretraining config: the recipe, the run's keys, its corpora and mix, its start."""
        model = self.model_of[name]
        unknown = sorted(set(run.corpora) - set(self.corpus_names))
        if unknown:
            raise UserError(f"{model}: corpora {unknown} are not in prepare.corpora ({', '.join(self.corpus_names)})")
        data = _recipe(self.cfg.pretrain.recipe, self.cfg.pretrain.overrides)
        for keys, value in _flat(run.overrides):
            apply_override(data, keys, value)
        data.update(output_dir=str(self.pretrain_dir(name)), progress=False)
        data.setdefault("data", {}).update(shards=str(self.shards_for(model)), sampling=run.sampling,
                                           temperature=run.temperature,
                                           weights={c: float(run.corpora.get(c, 0.0)) for c in self.corpus_names})
        if seed is not None:
            data.setdefault("train", {})["seed"] = seed
        if name != BASELINE:  # a variant continues from its parent's weights (and tokenizer)
            data["model"] = {**data.get("model", {}), "init": str(self.models[self.parent(name)]), "config": {}}
            if run.vocabulary is not None:  # grows the parent's embeddings; the export carries the new tokenizer
                extended = self.vocabulary_dir(model)
                data["model"].update(tokenizer=str(extended),
                                     vocabulary_extension=str(extended / "vocabulary_extension.json"))
        try:
            return build_config(PretrainConfig, data)
        except UserError as exc:
            raise UserError(f"pretraining run {name}: {exc.message}") from None

    def _task_data(self, task: TaskConfig) -> dict[str, Any]:
        """The task's fine-tuning config as plain data, without the per-run keys (languages, model, seed)."""
        data = _recipe(task.recipe, task.overrides)
        data.update(progress=False, cache_dir=str(self.grid_dir / "cache"))
        for key in ("output_dir", "model"):  # set by the grid: its run folder, and the model axis
            data.pop(key, None)
        if data.get("task") not in ("ner", "screening"):
            raise UserError(f"task {task.name}: its recipe must set task: ner or screening", task.recipe)
        if data["task"] == "ner" and task.metric != "f1":
            raise UserError(f"task {task.name}: NER is compared on exact-offset entity f1, not {task.metric}")
        if task.labels is not None:
            if data["task"] != "ner":
                raise UserError(f"task {task.name}: labels (entity label spaces) are for NER tasks only")
            data["labels"] = config_to_dict(task.labels)
        return data

    def kind(self, task: TaskConfig) -> str:
        return self.tasks[task.name]["task"]
