"""What a study config says (`medtrain study CONFIG`), field by field. Plain values only: no torch, so a
config is checked in a second; `medtrain.study.plan` resolves it into the stages' own configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from medtrain.cluster.resources import RUNS_PER_TASK, SlurmResources
from medtrain.data.mixing import Sampling
from medtrain.data.ner_format import LabelConfig
from medtrain.data.vocab_extension import VocabularyConfig
from medtrain.finetune.config import SourceConfig, source_config

BASELINE = "baseline"
EVALUATION_SPLITS = ("dev", "test")
"""The splits `decontaminate` keeps out of pretraining (a task's training text may be pretrained on)."""


@dataclasses.dataclass
class PretrainRecipe:
    recipe: str = "demo-pretrain"
    """The pretraining config every run starts from (packaged name or path): model size, DeepSpeed, schedule."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dotted keys changed for every pretraining run, e.g. {train.max_steps: 600}; nested mappings merge."""


@dataclasses.dataclass
class PretrainRun:
    """One pretraining run of the study: where it starts, which corpora it reads, mixed how."""

    corpora: dict[str, float]
    """Corpus name (from prepare.corpora) -> mixing weight; every corpus not named gets weight 0."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dotted pretraining keys for this run only, after pretrain.overrides, e.g. {train.max_steps: 2000}."""
    start: str = dataclasses.field(default=BASELINE, metadata={"key": "from"})
    """`from:` the model this variant continues from: baseline, or another variant (staged adaptation, e.g.
    biomedical then clinical). On SLURM its job waits for that one's (afterok)."""
    sampling: Sampling = "uniform"
    """How the corpora are mixed (medtrain.data.mixing): uniform (shares follow the weights, whatever the
    sizes), proportional (weight x size), temperature (language probability proportional to size^(1/T))."""
    temperature: float = 1.0
    """T for sampling: temperature; 1 is proportional, larger flattens towards uniform over languages."""
    vocabulary: VocabularyConfig | None = None
    """{add: N, min_count: C}: extend the tokenizer with the N most frequent whole words of these corpora that it
    splits into 3+ pieces (new embeddings start as the mean of their pieces'); descendants inherit it."""

    def __post_init__(self) -> None:
        if not self.corpora or any(not w >= 0 for w in self.corpora.values()) or not sum(self.corpora.values()) > 0:
            raise ValueError("corpora needs at least one corpus with a positive weight, e.g. {clinical_nl: 1.0}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclasses.dataclass
class BaselineConfig:
    """The un-adapted model that every variant continues from and is compared with. Give model or pretrain."""

    model: Path | None = None
    """A local Hugging Face folder: a downloaded bert-base-multilingual-cased (no network at run time)."""
    pretrain: PretrainRun | None = None
    """Or pretrain it here, from scratch with the recipe's model.config: the sample data's stand-in for mBERT."""

    def __post_init__(self) -> None:
        if (self.model is None) == (self.pretrain is None):
            raise ValueError("baseline: give exactly one of model (a local mBERT folder) or pretrain (corpora "
                             "to pretrain it on here)")
        if self.pretrain is not None and (self.pretrain.start != BASELINE or self.pretrain.vocabulary):
            raise ValueError("baseline.pretrain: from and vocabulary are for variants (the baseline starts "
                             "from scratch with prepare.tokenizer)")


@dataclasses.dataclass
class TaskConfig:
    """One fine-tuning task: trained on each training language in turn, tested on every test language."""

    name: str
    """Names the task in tables, e.g. ner-ro."""
    recipe: str
    """Fine-tuning config (packaged name or path, e.g. finetune-ner): task kind, data format, hyper-parameters."""
    path: str | dict[str, Any]
    """Where a split is, under data_dir: one pattern with {lang} and {split} (train/dev/test), ner/{lang}/{split};
    or one per language, each a pattern with {split} or a mapping {path: pattern, format: conll, columns: {token:
    0, tag: 2}, short_lines: skip, discontinuous: join} (the keys of a fine-tuning data source), so one task can
    mix BRAT and column files. Read into SourceConfig here."""
    train_languages: list[str]
    """One run per language (and model and seed): the rows of the cross-lingual matrix."""
    test_languages: list[str]
    """Every run is tested on each: the columns of the cross-lingual matrix."""
    metric: Literal["f1", "auroc", "auprc"] = "f1"
    """What the report compares. NER: strict exact-offset entity F1 (micro; type and character offsets must
    match). Screening: patient F1 at the dev-chosen threshold, or the threshold-free AUROC / AUPRC."""
    labels: LabelConfig | None = None
    """NER only: the label space every fine-tuning run of the task reads into, {map: {es: {PROTEINAS: CHEM}},
    keep: [CHEM, DISO], strict: false} (see the fine-tuning config's `labels`)."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dotted fine-tuning keys for this task, e.g. {train.epochs: 3, train.lr: 1.0e-3}."""

    def __post_init__(self) -> None:
        if not self.train_languages or not self.test_languages:
            raise ValueError(f"task {self.name}: train_languages and test_languages need at least one language")
        if isinstance(self.path, str):
            if "{lang}" not in self.path or "{split}" not in self.path:
                raise ValueError(f"tasks: path {self.path!r} must contain {{lang}} and {{split}}, "
                                 "e.g. ner/{lang}/{split}")
            return
        missing = [lang for lang in dict.fromkeys(self.train_languages + self.test_languages) if lang not in self.path]
        if missing:
            raise ValueError(f"task {self.name}: path has no entry for {', '.join(missing)}")
        self.path = {str(lang): source_config(value, f"task {self.name}: path.{lang}")
                     for lang, value in self.path.items()}
        for lang, source in self.path.items():
            if "{split}" not in str(source if isinstance(source, Path) else source.path):
                raise ValueError(f"task {self.name}: path.{lang} must contain {{split}}, e.g. ner/{lang}/{{split}}")

    def source(self, lang: str, split: str) -> str | SourceConfig:
        """One split's path pattern filled in: a string (the task's default reading), or a SourceConfig."""
        if isinstance(self.path, str):
            return self.path.format(lang=lang, split=split)
        source = self.path[lang]
        if isinstance(source, Path):
            return str(source).format(lang=lang, split=split)
        return dataclasses.replace(source, path=Path(str(source.path).format(lang=lang, split=split)))


@dataclasses.dataclass
class LocalConfig:
    ranks: int | None = None
    """Processes per pretraining run (deepspeed --num_gpus N); None: one per GPU, else 2 CPU ranks (1 per core)."""
    finetune_parallelism: int = 2
    """Fine-tuning processes at a time; the CPU cores are shared out among them."""
    runs_per_process: int = RUNS_PER_TASK
    """Fine-tuning runs one after another in each of those processes (libraries imported once); 1: a fresh
    process per run. The grid spec's local_runs_per_process; the default and why: RUNS_PER_TASK."""

    def __post_init__(self) -> None:
        if (self.ranks is not None and self.ranks < 1) or self.finetune_parallelism < 1 or self.runs_per_process < 1:
            raise ValueError("local.ranks, local.finetune_parallelism and local.runs_per_process must be >= 1")


@dataclasses.dataclass
class SlurmConfig:
    pretrain: SlurmResources = dataclasses.field(default_factory=SlurmResources)
    """Per pretraining job (nodes, gpus_per_node or tasks_per_node, ...); a job stopped by its time limit
    requeues itself and resumes from its last checkpoint."""
    finetune: SlurmResources = dataclasses.field(default_factory=SlurmResources)
    """Per fine-tuning array task (runs_per_task runs, one after another); the grid spec's `slurm` section."""
    array_parallelism: int = 16
    """Fine-tuning array tasks running at once."""


@dataclasses.dataclass
class AnalysisConfig:
    max_documents: int = 300
    """Documents read per corpus and task text."""
    perplexity_sequences: int = 64
    """Sequences per task text on which each model's masked-LM perplexity is measured."""


@dataclasses.dataclass
class CompareConfig:
    bootstrap: int = 1000
    """Multi-bootstrap replicates per difference (medtrain.study.compare says how they are drawn)."""
    alpha: float = 0.05
    """1 - confidence level (0.05: 95% intervals)."""
    seed: int = 0
    pairs: list[list[str]] | None = None
    """[[a, b], ...]: each comparison as b - a, e.g. [[biomedical, clinical]]; models are baseline and the
    variants' names. Default: each variant against the baseline, then every variant against every other."""
    correction: Literal["holm", "none"] = "holm"
    """Multiple comparisons (every pair of models x language pair in a task): holm (Holm's step-down, which
    controls the family-wise error at alpha) or none (each difference judged at alpha alone)."""

    def __post_init__(self) -> None:
        if self.bootstrap < 1 or not 0 < self.alpha < 1:
            raise ValueError("compare.bootstrap must be >= 1 and compare.alpha in (0, 1)")


@dataclasses.dataclass
class StudyConfig:
    """`medtrain study`: pretraining variants, fine-tuning grid, analysis and report, from one config."""

    output_dir: Path
    """Everything the study writes: shards/, pretrain/, grid/, analysis/, report.md."""
    data_dir: Path
    """Task data and corpora; relative paths in prepare and in tasks.*.path are resolved against it."""
    prepare: dict[str, Any]
    """`medtrain prepare` fields except output_dir: tokenizer (default: baseline.model), corpora, seq_len, ...
    An `exclude` section here is used as given, in place of the one `decontaminate` builds."""
    baseline: BaselineConfig
    variants: dict[str, PretrainRun]
    """Name -> corpora, each pretrained further from the baseline (or `from:` another variant), e.g.
    clinical: {corpora: {clinical_nl: 1}}."""
    tasks: list[TaskConfig]
    pretrain: PretrainRecipe = dataclasses.field(default_factory=PretrainRecipe)
    decontaminate: bool = True
    """Keep the tasks' evaluation text out of pretraining: `prepare` drops every corpus document that holds most
    of one dev or test document of any task, in any language a task reads (the `exclude` rule's defaults: word
    13-grams, containment 0.5; and, when a screening task is evaluated and a corpus's records carry patient_id,
    every document of an evaluation patient). The report counts what was dropped. false: no exclusion, and the
    report says the tasks' dev/test text may be in the pretraining corpora."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    """Fine-tuning seeds per (model, task, training language): the intervals need at least 2."""
    pretrain_seeds: list[int] = dataclasses.field(default_factory=list)
    """Pretrain every variant once per seed (pretrain/<name>-seed<S>/, data order and masking from S; a staged
    variant's replicate S starts from its parent's replicate S) and fine-tune each; empty: once, with the
    recipe's train.seed. The baseline is pretrained once: it stands for one published checkpoint."""
    executor: Literal["local", "slurm"] = "local"
    local: LocalConfig = dataclasses.field(default_factory=LocalConfig)
    slurm: SlurmConfig = dataclasses.field(default_factory=SlurmConfig)
    analysis: AnalysisConfig = dataclasses.field(default_factory=AnalysisConfig)
    compare: CompareConfig = dataclasses.field(default_factory=CompareConfig)

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("variants is empty: name at least one, e.g. clinical: {corpora: {clinical_nl: 1.0}}")
        for name in self.variants:
            if name == BASELINE or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"variants.{name}: a name of letters, digits, '-' or '_', other than 'baseline'")
        if len(set(self.seeds)) != len(self.seeds) or len(self.seeds) < 2:
            raise ValueError("seeds: at least 2 distinct seeds (the confidence intervals resample them)")
        if len(set(self.pretrain_seeds)) != len(self.pretrain_seeds):
            raise ValueError("pretrain_seeds: distinct seeds, e.g. [0, 1]")
        self._check_lineage()
        self._check_pairs()
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError("tasks: at least one, with distinct names")

    def _check_lineage(self) -> None:
        """Every `from:` names the baseline or a variant, and following them always reaches the baseline."""
        for name, run in self.variants.items():
            if run.start != BASELINE and run.start not in self.variants:
                raise ValueError(f"variants.{name}.from: unknown model {run.start!r} (baseline or one of "
                                 f"{', '.join(self.variants)})")
        for name in self.variants:
            path = [name]
            while path[-1] != BASELINE:
                path.append(self.variants[path[-1]].start)
                if path[-1] in path[:-1]:
                    raise ValueError(f"variants.{name}.from: a cycle ({' -> '.join(path)}): a chain of from: "
                                     "must end at the baseline")

    def _check_pairs(self) -> None:
        models = [BASELINE, *self.variants]
        for i, pair in enumerate(self.compare.pairs or []):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"compare.pairs.{i}: a pair is two different models, e.g. [baseline, clinical]")
            for name in pair:
                if name not in models:
                    raise ValueError(f"compare.pairs.{i}: unknown model {name!r} (models: {', '.join(models)})")

    def comparisons(self) -> list[tuple[str, str]]:
        """(a, b) pairs, each compared as b - a: compare.pairs, or by default each variant against the baseline,
        then every variant against every later one."""
        if self.compare.pairs:
            return [(a, b) for a, b in self.compare.pairs]
        variants = list(self.variants)
        return [(BASELINE, v) for v in variants] + [(a, b) for i, a in enumerate(variants) for b in variants[i + 1:]]

    def lineage(self, name: str) -> list[str]:
        """The variants from the baseline's first child down to `name` (empty for the baseline)."""
        chain = []
        while name != BASELINE:
            chain.append(name)
            name = self.variants[name].start
        return chain[::-1]

