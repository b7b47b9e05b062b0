"""`medtrain study CONFIG`: the study this toolkit exists for, from raw corpora to report.md, in one command.

    medtrain study study-demo data_dir=demo/data output_dir=demo/study

Stages, in order. Each is complete when its own final artifact exists, so running the command again continues
where it stopped and redoes nothing complete:

    1. prepare    corpora -> OUTPUT_DIR/shards/                 complete: manifest.json (prepare writes it last)
    2. pretrain   the baseline (when it is pretrained here), then each variant continuing from it
                  -> OUTPUT_DIR/pretrain/<name>/                complete: export/ newer than the last checkpoint
    3. finetune   one grid (OUTPUT_DIR/grid.yaml): models x tasks x training languages x seeds, each run tested
                  on every test language -> OUTPUT_DIR/grid/runs/<signature>/   complete: results.json
    4. analyze    fertility, corpus-task overlap, perplexity -> OUTPUT_DIR/analysis/   complete: analysis.json
                  for the same models and task texts
    5. report     OUTPUT_DIR/report.md, report.json, differences.png    complete: newer than every input

executor: local runs each pretraining run as a subprocess (`deepspeed --num_gpus N medtrain/pretrain.py`, or
`python medtrain/pretrain.py` for one rank) and the grid through its local executor. executor: slurm submits
the pretraining runs as SLURM jobs (the variants wait for the baseline: afterok) and the grid as one array that
waits for all of them, then returns; run the same command again once the jobs have ended for the analysis and
the report (`medtrain grid status OUTPUT_DIR/grid.yaml` shows where the runs stand).

The comparison and its intervals: medtrain/compare.py; the report: medtrain/study_report.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from medtrain.compare import CompareConfig
from medtrain.config import apply_override, build_config, config_to_dict, read_yaml, resolve_config_path
from medtrain.data.pack import PrepareConfig
from medtrain.errors import UserError
from medtrain.grid.spec import SlurmResources
from medtrain.io import write_json_atomic, write_text_atomic
from medtrain.pretrain import PretrainConfig

BASELINE = "baseline"
Say = Callable[[str], None]


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass
class PretrainRecipe:
    recipe: str = "demo-pretrain"
    """The pretraining config every run starts from (packaged name or path): model size, DeepSpeed, schedule."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dotted keys changed for every pretraining run, e.g. {train.max_steps: 600}; nested mappings merge."""


@dataclasses.dataclass
class PretrainRun:
    """One pretraining run of the study: which corpora it reads, mixed how."""

    corpora: dict[str, float]
    """Corpus name (from prepare.corpora) -> mixing weight; every corpus not named gets weight 0."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dotted pretraining keys for this run only, after pretrain.overrides, e.g. {train.max_steps: 2000}."""

    def __post_init__(self) -> None:
        if not self.corpora or any(not w >= 0 for w in self.corpora.values()) or not sum(self.corpora.values()) > 0:
            raise ValueError("corpora needs at least one corpus with a positive weight, e.g. {clinical_nl: 1.0}")


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


@dataclasses.dataclass
class TaskConfig:
    """One fine-tuning task: trained on each training language in turn, tested on every test language."""

    name: str
    """Names the task in tables, e.g. ner-ro."""
    recipe: str
    """Fine-tuning config (packaged name or path, e.g. finetune-ner): task kind, data format, hyper-parameters."""
    path: str
    """Where a split is, under data_dir, with {lang} and {split} (train/dev/test): ner/{lang}/{split}."""
    train_languages: list[str]
    """One run per language (and model and seed): the rows of the cross-lingual matrix."""
    test_languages: list[str]
    """Every run is tested on each: the columns of the cross-lingual matrix."""
    metric: Literal["f1", "auroc", "auprc"] = "f1"
    """What the report compares. NER: entity F1 (seqeval strict). Screening: patient F1 at the dev-chosen
    threshold, or the threshold-free AUROC / AUPRC."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dotted fine-tuning keys for this task, e.g. {train.epochs: 3, train.lr: 1.0e-3}."""

    def __post_init__(self) -> None:
        if "{lang}" not in self.path or "{split}" not in self.path:
            raise ValueError(f"tasks: path {self.path!r} must contain {{lang}} and {{split}}, e.g. ner/{{lang}}/{{split}}")
        if not self.train_languages or not self.test_languages:
            raise ValueError(f"task {self.name}: train_languages and test_languages need at least one language")


@dataclasses.dataclass
class LocalConfig:
    ranks: int | None = None
    """Processes per pretraining run (deepspeed --num_gpus N); None: one per GPU, else 2 CPU ranks (1 per core)."""
    finetune_parallelism: int = 2
    """Fine-tuning runs at a time; the CPU cores are shared out among them."""

    def __post_init__(self) -> None:
        if (self.ranks is not None and self.ranks < 1) or self.finetune_parallelism < 1:
            raise ValueError("local.ranks and local.finetune_parallelism must be >= 1")


@dataclasses.dataclass
class PretrainSlurm:
    """What each pretraining job asks SLURM for (medtrain.grid.pretrain_job.submit_pretrain)."""

    nodes: int = 1
    gpus_per_node: int = 0
    """One rank per GPU; 0: tasks_per_node CPU ranks."""
    tasks_per_node: int | None = None
    partition: str | None = None
    time_min: int = 60
    """Per job; a job stopped by the limit requeues itself and resumes from its last checkpoint."""
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Other submitit SLURM parameters, e.g. {exclude: node07}."""


@dataclasses.dataclass
class SlurmConfig:
    pretrain: PretrainSlurm = dataclasses.field(default_factory=PretrainSlurm)
    finetune: SlurmResources = dataclasses.field(default_factory=SlurmResources)
    """Per fine-tuning run (one array task); the grid spec's `slurm` section."""
    array_parallelism: int = 16
    """Fine-tuning array tasks running at once."""


@dataclasses.dataclass
class AnalysisConfig:
    max_documents: int = 300
    """Documents read per corpus and task text."""
    perplexity_sequences: int = 64
    """Sequences per task text on which each model's masked-LM perplexity is measured."""


@dataclasses.dataclass
class StudyConfig:
    """`medtrain study`: pretraining variants, fine-tuning grid, analysis and report, from one config."""

    output_dir: Path
    """Everything the study writes: shards/, pretrain/, grid/, analysis/, report.md."""
    data_dir: Path
    """Task data and corpora; relative paths in prepare and in tasks.*.path are resolved against it."""
    prepare: dict[str, Any]
    """`medtrain prepare` fields except output_dir: tokenizer (default: baseline.model), corpora, seq_len, ..."""
    baseline: BaselineConfig
    variants: dict[str, PretrainRun]
    """Name -> corpora, each pretrained further from the baseline, e.g. clinical: {corpora: {clinical_nl: 1}}."""
    tasks: list[TaskConfig]
    pretrain: PretrainRecipe = dataclasses.field(default_factory=PretrainRecipe)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    """Fine-tuning seeds per (model, task, training language): the intervals need at least 2."""
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
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError("tasks: at least one, with distinct names")


# ----------------------------------------------------------------------------- building the stages' configs


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
        self.prepare = self._prepare_config()
        self.corpus_names = [c.name for c in self.prepare.corpora]
        baseline = cfg.baseline.model or self.pretrain_dir(BASELINE) / "export"
        self.models = {BASELINE: baseline, **{v: self.pretrain_dir(v) / "export" for v in cfg.variants}}
        runs = {**({BASELINE: cfg.baseline.pretrain} if cfg.baseline.pretrain else {}), **cfg.variants}
        self.pretrain = {name: self._pretrain_config(name, run) for name, run in runs.items()}
        self.tasks = {t.name: self._task_data(t) for t in cfg.tasks}

    def pretrain_dir(self, name: str) -> Path:
        return self.out / "pretrain" / name

    def split(self, task: TaskConfig, lang: str, split: str) -> Path:
        return _under(self.cfg.data_dir, task.path.format(lang=lang, split=split))

    def _prepare_config(self) -> PrepareConfig:
        data = {**self.cfg.prepare, "output_dir": str(self.shards)}
        data.setdefault("data_root", str(self.cfg.data_dir))
        tokenizer = data.get("tokenizer") or self.cfg.baseline.model
        if tokenizer is None:
            raise UserError("prepare.tokenizer is required when the baseline is pretrained here")
        data["tokenizer"] = str(_under(self.cfg.data_dir, tokenizer) if "tokenizer" in self.cfg.prepare
                                else tokenizer)
        try:
            return build_config(PrepareConfig, data)
        except UserError as exc:
            raise UserError(f"prepare: {exc.message}") from None

    def _pretrain_config(self, name: str, run: PretrainRun) -> PretrainConfig:
        unknown = sorted(set(run.corpora) - set(self.corpus_names))
        if unknown:
            raise UserError(f"{name}: corpora {unknown} are not in prepare.corpora ({', '.join(self.corpus_names)})")
        data = _recipe(self.cfg.pretrain.recipe, self.cfg.pretrain.overrides)
        for keys, value in _flat(run.overrides):
            apply_override(data, keys, value)
        data.update(output_dir=str(self.pretrain_dir(name)), progress=False)
        data.setdefault("data", {}).update(shards=str(self.shards),
                                           weights={c: float(run.corpora.get(c, 0.0)) for c in self.corpus_names})
        if name != BASELINE:  # a variant continues from the baseline's weights
            data["model"] = {**data.get("model", {}), "init": str(self.models[BASELINE]), "config": {}}
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
            raise UserError(f"task {task.name}: NER is compared on entity f1, not {task.metric}")
        return data

    def kind(self, task: TaskConfig) -> str:
        return self.tasks[task.name]["task"]


# ----------------------------------------------------------------------------- stage 1: prepare


def stage_prepare(study: Study, say: Say) -> None:
    from medtrain.data.pack import prepare

    if (study.shards / "manifest.json").is_file():
        say(f"[1/5] prepare: {study.shards} is complete")
        return
    say(f"[1/5] prepare: {len(study.prepare.corpora)} corpora -> {study.shards}")
    prepare(study.prepare)


# ----------------------------------------------------------------------------- stage 2: pretrain


def _local_ranks(cfg: LocalConfig) -> int:
    import torch

    return cfg.ranks or torch.cuda.device_count() or min(2, len(os.sched_getaffinity(0)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pretrain_command(config: Path, ranks: int) -> list[str]:
    """`deepspeed --num_gpus N medtrain/pretrain.py CONFIG` for several ranks, `python medtrain/pretrain.py` for one."""
    import medtrain.pretrain

    script = medtrain.pretrain.__file__
    if ranks == 1:
        return [sys.executable, script, str(config)]
    launcher = Path(sys.executable).with_name("deepspeed")
    if not launcher.is_file():
        launcher = Path(shutil.which("deepspeed") or "deepspeed")
    return [str(launcher), "--num_gpus", str(ranks), "--master_port", str(_free_port()), script, str(config)]


def _pretrain_env(ranks: int) -> dict[str, str]:
    """CPU ranks: DeepSpeed's CPU accelerator and one core's threads each (more threads per rank than cores
    make every rank spin-wait on the others)."""
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // ranks)))
    return env


def _write_pretrain_config(study: Study, name: str) -> Path:
    path = study.out / "configs" / f"pretrain-{name}.yaml"
    write_text_atomic(path, yaml.safe_dump(config_to_dict(study.pretrain[name]), sort_keys=False))
    return path


def _run_pretrain_locally(study: Study, name: str, say: Say) -> None:
    ranks = _local_ranks(study.cfg.local)
    log = study.pretrain_dir(name).with_suffix(".log")
    command = pretrain_command(_write_pretrain_config(study, name), ranks)
    say(f"[2/5] pretrain {name}: {ranks} rank(s), {study.pretrain[name].train.max_steps} steps; log {log}")
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=_pretrain_env(ranks)).returncode
    if code != 0:
        raise UserError(f"pretraining run {name} failed (exit {code}); run the study again to resume it", log)
    say(f"[2/5] pretrain {name}: done in {time.perf_counter() - started:.0f}s")


def _live_job(job_id: str | None) -> bool:
    from medtrain.grid.status import find_job, query_squeue, slurm_state

    job = find_job(query_squeue([job_id]), job_id) if job_id else None
    return job is not None and slurm_state(job) is not None


def _submit_pretrain(study: Study, name: str, after: list[str]) -> str:
    from medtrain.grid.pretrain_job import submit_pretrain

    res = study.cfg.slurm.pretrain
    extra = {**res.extra, **({"dependency": "afterok:" + ":".join(after)} if after else {})}
    submission = submit_pretrain(_write_pretrain_config(study, name), nodes=res.nodes,
                                 gpus_per_node=res.gpus_per_node, tasks_per_node=res.tasks_per_node,
                                 partition=res.partition, time_min=res.time_min, cpus_per_task=res.cpus_per_task,
                                 mem_gb=res.mem_gb, account=res.account, qos=res.qos, constraint=res.constraint,
                                 slurm=extra)
    return submission.job_id


def stage_pretrain(study: Study, say: Say) -> tuple[list[str], bool]:
    """Run (local) or submit (slurm) every unfinished pretraining run, the baseline first. Returns the SLURM job
    ids still to wait for, and whether any job was submitted now."""
    from medtrain.grid.pretrain_job import run_finished

    jobs_file = study.out / "jobs.json"
    jobs = json.loads(jobs_file.read_text()) if jobs_file.is_file() else {}
    waiting: dict[str, str] = {}
    submitted = False
    for name in study.pretrain:
        if run_finished(study.pretrain_dir(name)):
            say(f"[2/5] pretrain {name}: {study.models[name]} is complete")
            continue
        if study.cfg.executor == "local":
            _run_pretrain_locally(study, name, say)
            continue
        if _live_job(jobs.get(name)):
            waiting[name] = jobs[name]
            say(f"[2/5] pretrain {name}: SLURM job {jobs[name]} is still pending or running")
            continue
        after = [waiting[BASELINE]] if name != BASELINE and BASELINE in waiting else []
        waiting[name] = jobs[name] = _submit_pretrain(study, name, after)
        write_json_atomic(jobs_file, jobs)
        submitted = True
        say(f"[2/5] pretrain {name}: submitted SLURM job {jobs[name]}" + (f" (after {after[0]})" if after else ""))
    return list(waiting.values()), submitted


# ----------------------------------------------------------------------------- stage 3: finetune (the grid)


def grid_spec(study: Study, after: Sequence[str]) -> dict[str, Any]:
    """The grid: axes model x seed, one combination per (task, training language) holding the task's whole
    config (the base is empty), so the grid's signatures, skipping and SLURM array do the rest."""
    cfg = study.cfg
    combos = []
    for task in cfg.tasks:
        for lang in task.train_languages:
            data = json.loads(json.dumps(study.tasks[task.name]))  # a deep copy
            data.setdefault("data", {}).update(
                train={lang: str(study.split(task, lang, "train"))}, dev={lang: str(study.split(task, lang, "dev"))},
                test={t: str(study.split(task, t, "test")) for t in task.test_languages})
            combos.append(data)
    extra = {**cfg.slurm.finetune.extra, **({"dependency": "afterok:" + ":".join(after)} if after else {})}
    return {"grid_dir": str(study.grid_dir), "base": {},
            "axes": {"model": [str(p) for p in study.models.values()], "train.seed": list(cfg.seeds)},
            "combos": combos, "executor": cfg.executor, "local_parallelism": cfg.local.finetune_parallelism,
            "array_parallelism": cfg.slurm.array_parallelism,
            "slurm": {**config_to_dict(cfg.slurm.finetune), "extra": extra}}


def stage_finetune(study: Study, after: Sequence[str], pretrain_resubmitted: bool, say: Say) -> bool:
    """Launch the grid's missing runs; True when every run is complete."""
    from medtrain.grid.spec import load_grid
    from medtrain.grid.status import COMPLETED, LIVE, count_line, grid_status
    from medtrain.grid.submit import cancel_grid, submit_grid

    header = "# The study's fine-tuning grid, written by `medtrain study`; see `medtrain grid status` on this file.\n"
    write_text_atomic(study.grid_file, header + yaml.safe_dump(grid_spec(study, after), sort_keys=False))
    grid = load_grid(study.grid_file)
    if pretrain_resubmitted and any(s.state in LIVE for s in grid_status(grid)):
        cancelled = cancel_grid(grid)  # they wait on pretraining jobs that are gone: resubmit after the new ones
        say(f"[3/5] finetune: cancelled {len(cancelled)} runs waiting on earlier pretraining jobs")
    submit_grid(grid, lambda line: say(f"[3/5] finetune: {line}"))
    statuses = grid_status(grid)
    if all(s.state == COMPLETED for s in statuses):
        return True
    if study.cfg.executor == "local":
        raise UserError(f"{count_line(statuses)}; logs in {study.grid_dir / 'local'}; run the study again to retry "
                        "the missing runs")
    say(f"[3/5] finetune: {count_line(statuses)}; run `medtrain study` again once the jobs have ended "
        f"(progress: medtrain grid status {study.grid_file})")
    return False


# ----------------------------------------------------------------------------- stage 4: analyze


def analyze_config(study: Study) -> Any:
    from medtrain.analyze import AnalyzeConfig, TaskText

    texts = [TaskText(name=f"{t.name}/{lang}", kind=study.kind(t), path=study.split(t, lang, "train"), language=lang,
                      format=study.tasks[t.name]["data"]["format"]) for t in study.cfg.tasks for lang in t.train_languages]
    corpora = [dataclasses.replace(c, path=study.prepare.corpus_path(c)) for c in study.prepare.corpora]
    return AnalyzeConfig(output_dir=study.analysis_dir, tokenizer=study.shards / "tokenizer", corpora=corpora,
                         tasks=texts, models=dict(study.models), max_documents=study.cfg.analysis.max_documents,
                         seq_len=study.prepare.seq_len, perplexity_sequences=study.cfg.analysis.perplexity_sequences)


def stage_analyze(study: Study, say: Say) -> None:
    from medtrain.analyze import analyze

    cfg = analyze_config(study)
    done = study.analysis_dir / "analysis.json"
    if done.is_file():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if set(previous["perplexity"]) == set(cfg.models) and \
                {t for row in previous["perplexity"].values() for t in row} == {t.name for t in cfg.tasks}:
            say(f"[4/5] analyze: {done} is complete")
            return
    say(f"[4/5] analyze: {len(cfg.corpora)} corpora, {len(cfg.tasks)} task texts, {len(cfg.models)} models")
    analyze(cfg)


# ----------------------------------------------------------------------------- the command


def run_study(cfg: StudyConfig, say: Say = print) -> int:
    """Run every stage that is not complete yet; print the results table, the report's path and how to watch."""
    from medtrain.study_report import stage_report

    study = Study(cfg)
    started = time.perf_counter()
    stage_prepare(study, say)
    waiting, resubmitted = stage_pretrain(study, say)
    if not stage_finetune(study, waiting, resubmitted, say):
        say(f"watch it with: tensorboard --logdir {study.out}")
        return 0
    stage_analyze(study, say)
    table = stage_report(study, say)
    say("")
    say(table)
    say(f"report: {study.report}  ({time.perf_counter() - started:.0f}s)")
    say(f"watch it with: tensorboard --logdir {study.out}")
    return 0
