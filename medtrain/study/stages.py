"""The study's first four stages, in order; each is complete when its own final artifact exists, so a second
run continues where the first stopped and redoes nothing complete (the report is `medtrain.study.report`):

    1. prepare    corpora, less every task's dev and test text (decontaminate) -> OUTPUT_DIR/shards/
                  and per variant with `vocabulary:` its extended tokenizer -> OUTPUT_DIR/vocabulary/<name>/
                  and the corpora tokenized with it -> OUTPUT_DIR/shards-<name>/
                  complete: manifest.json for this prepare config (prepare checks; the study owns these folders,
                  so a changed config, exclusion or evaluation file is prepared again)
    2. pretrain   the baseline (when it is pretrained here), then each variant's replicates, parents first,
                  each continuing from its parent -> OUTPUT_DIR/pretrain/<replicate>/
                                                                complete: export/ newer than the last checkpoint
    3. finetune   one grid (OUTPUT_DIR/grid.yaml): models x tasks x training languages x seeds, each run tested
                  on every test language -> OUTPUT_DIR/grid/runs/<signature>/   complete: results.json
    4. analyze    fertility, corpus-task overlap, perplexity -> OUTPUT_DIR/analysis/   complete: analysis.json
                  for the same models and task texts

executor: local runs each pretraining run as a subprocess (`deepspeed --num_gpus N medtrain/pretrain.py`, or
`python medtrain/pretrain.py` for one rank) and the grid through its local executor. executor: slurm submits
the pretraining runs as SLURM jobs (each waits for the one it continues from: afterok) and the grid as one array
that waits for all of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medtrain.cluster.launch import rank_command
from medtrain.config import config_to_dict
from medtrain.errors import UserError
from medtrain.io import write_json_atomic, write_text_atomic
from medtrain.study.analysis import AnalyzeConfig, TaskText, analyze
from medtrain.study.config import BASELINE, LocalConfig
from medtrain.study.plan import Say, Study


# ----------------------------------------------------------------------------- stage 1: prepare


def stage_prepare(study: Study, say: Say) -> None:
    """For each variant with `vocabulary:` (parents first) its extended tokenizer, then the shards, then the
    corpora tokenized with each extended tokenizer, so everything a pretraining run reads exists before any run
    starts (and a vocabulary.add the corpora cannot fill stops the study before the long tokenizing)."""
    from medtrain.data.pack import prepare

    extending = [m for m in study.replicates if m != BASELINE and study.cfg.variants[m].vocabulary is not None]
    for model in extending:
        _extend_vocabulary(study, model, say)
    # prepare itself decides whether a folder is complete for this config (its signature holds the exclusion's
    # rule and its sources' bytes) and returns at once when it is; overwrite: these folders are the study's own.
    own = dataclasses.replace(study.prepare, overwrite=True)
    corpora = f"{len(study.prepare.corpora)} corpora" + (
        f" less {len(study.prepare.exclude.sources)} evaluation sources" if study.prepare.exclude else "")
    for model in [None, *extending]:
        shards = study.shards if model is None else study.shards_for(model)
        if (shards / "manifest.json").is_file():
            say(f"[1/5] prepare: checking {shards} is current")
        else:
            say(f"[1/5] prepare: {corpora}" + (f" with {model}'s tokenizer" if model else "") + f" -> {shards}")
        prepare(own if model is None else
                dataclasses.replace(own, tokenizer=study.tokenizer_for(model), output_dir=shards))


def _extend_vocabulary(study: Study, model: str, say: Say) -> None:
    """The variant's tokenizer: its parent's plus the most frequent whole words of its corpora that the parent's
    splits into 3+ pieces (medtrain.data.vocab_extension)."""
    from medtrain.data.corpus import CorpusReader
    from medtrain.data.tokenizer import load_tokenizer
    from medtrain.data.vocab_extension import extend_tokenizer, select_words

    out = study.vocabulary_dir(model)
    if (out / "vocabulary_extension.json").is_file():
        return
    run = study.cfg.variants[model]
    base = study.tokenizer_for(run.start) if run.start != BASELINE else Path(study.prepare.tokenizer)
    readers = [CorpusReader(c, study.prepare.corpus_path(c)) for c in study.prepare.corpora
               if run.corpora.get(c.name, 0.0) > 0]
    texts = (document.text for reader in readers for document in reader)
    try:
        words = select_words(texts, load_tokenizer(base), run.vocabulary)
    except ValueError as exc:
        raise UserError(f"variants.{model}.vocabulary.add: {exc}") from None
    extend_tokenizer(base, words, out)
    say(f"[1/5] prepare: {model}'s tokenizer + {len(words)} words -> {out}")


# ----------------------------------------------------------------------------- stage 2: pretrain


def _local_ranks(cfg: LocalConfig) -> int:
    import torch

    return cfg.ranks or torch.cuda.device_count() or min(2, len(os.sched_getaffinity(0)))


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
    import medtrain.pretrain

    ranks = _local_ranks(study.cfg.local)
    log = study.pretrain_dir(name).with_suffix(".log")
    command = rank_command(medtrain.pretrain.__file__, [_write_pretrain_config(study, name)], ranks)
    say(f"[2/5] pretrain {name}: {ranks} rank(s), {study.pretrain[name].train.max_steps} steps; log {log}")
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=_pretrain_env(ranks)).returncode
    if code != 0:
        raise UserError(f"pretraining run {name} failed (exit {code}); run the study again to resume it", log)
    say(f"[2/5] pretrain {name}: done in {time.perf_counter() - started:.0f}s")


def stage_pretrain(study: Study, say: Say) -> tuple[list[str], bool]:
    """Run (local) or submit (slurm) every unfinished pretraining run, the baseline first. Returns the SLURM job
    ids still to wait for, and whether any job was submitted now."""
    from medtrain.cluster.jobs import job_is_live
    from medtrain.cluster.pretrain_job import run_finished, submit_pretrain

    jobs_file = study.out / "jobs.json"
    jobs = json.loads(jobs_file.read_text()) if jobs_file.is_file() else {}
    waiting: dict[str, str] = {}
    submitted = False
    for name in study.pretrain:
        _refuse_other_shards(study, name)
        if run_finished(study.pretrain_dir(name)):
            say(f"[2/5] pretrain {name}: {study.models[name]} is complete")
            continue
        if study.cfg.executor == "local":
            _run_pretrain_locally(study, name, say)
            continue
        if job_is_live(jobs.get(name)):
            waiting[name] = jobs[name]
            say(f"[2/5] pretrain {name}: SLURM job {jobs[name]} is still pending or running")
            continue
        parent = study.parent(name) if name != BASELINE else None
        after = [waiting[parent]] if parent in waiting else []
        submission = submit_pretrain(_write_pretrain_config(study, name), resources=study.cfg.slurm.pretrain,
                                     after=after)
        waiting[name] = jobs[name] = submission.job_id
        write_json_atomic(jobs_file, jobs)
        submitted = True
        say(f"[2/5] pretrain {name}: submitted SLURM job {jobs[name]}" + (f" (after {after[0]})" if after else ""))
    return list(waiting.values()), submitted


def _refuse_other_shards(study: Study, name: str) -> None:
    """A run whose latest checkpoint streamed other shards than its folder holds now (the corpora, the tokenizer
    or the evaluation text kept out changed since) is stale, and so is everything fine-tuned from it: the study
    says so rather than resume it on other data or report a model that read what is now excluded."""
    from medtrain.data.shards import read_manifest

    checkpoints = study.pretrain_dir(name) / "checkpoints"
    if not (checkpoints / "latest").is_file():
        return
    state = checkpoints / (checkpoints / "latest").read_text().strip() / "rank-00000.json"
    trained_on = json.loads(state.read_text(encoding="utf-8"))["loader"].get("manifest") if state.is_file() else None
    shards = study.shards_for(study.model_of[name])
    if trained_on is not None and trained_on != read_manifest(shards).fingerprint():
        raise UserError(f"pretraining run {name} streamed other shards than {shards} holds now (its corpora, "
                        "tokenizer or the evaluation text kept out changed since): it and the fine-tuning runs from "
                        f"it are stale; remove {study.pretrain_dir(name)} and {study.grid_dir}, or choose a new "
                        "output_dir, to redo them")


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
                train={lang: study.split_source(task, lang, "train")},
                dev={lang: study.split_source(task, lang, "dev")},
                test={t: study.split_source(task, t, "test") for t in task.test_languages})
            combos.append(data)
    extra = {**cfg.slurm.finetune.extra, **({"dependency": "afterok:" + ":".join(after)} if after else {})}
    return {"grid_dir": str(study.grid_dir), "base": {},
            "axes": {"model": [str(p) for p in study.models.values()], "train.seed": list(cfg.seeds)},
            "combos": combos, "executor": cfg.executor, "local_parallelism": cfg.local.finetune_parallelism,
            "local_runs_per_process": cfg.local.runs_per_process,
            "array_parallelism": cfg.slurm.array_parallelism,
            "slurm": {**config_to_dict(cfg.slurm.finetune), "extra": extra}}


def stage_finetune(study: Study, after: Sequence[str], pretrain_resubmitted: bool, say: Say) -> bool:
    """Launch the grid's missing runs; True when every run is complete."""
    from medtrain.cluster.jobs import LIVE
    from medtrain.grid.spec import load_grid
    from medtrain.grid.status import COMPLETED, count_line, grid_status
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


def analyze_config(study: Study) -> AnalyzeConfig:
    """Every task's training text and each test language's test text; the base tokenizer and each extended one;
    per replicate, the corpora its lineage was pretrained on (the adaptation data whose coverage is measured)."""
    texts = []
    for t in study.cfg.tasks:
        for lang, split in [(lang, "train") for lang in t.train_languages] + [(lang, "test") for lang in
                                                                              t.test_languages]:
            source = study.reading(t, lang, split)
            texts.append(TaskText(name=f"{t.name}/{lang}/{split}", kind=study.kind(t), split=split,
                                  path=study.split(t, lang, split), language=lang, format=source.format,
                                  columns=source.columns, brat=source.brat))
    corpora = [dataclasses.replace(c, path=study.prepare.corpus_path(c)) for c in study.prepare.corpora]
    runs = {BASELINE: study.cfg.baseline.pretrain, **study.cfg.variants}
    mixtures = {r: sorted({c for m in (study.cfg.lineage(study.model_of[r]) or [BASELINE]) if runs[m]
                           for c, w in runs[m].corpora.items() if w > 0}) for r in study.models}
    tokenizers = {m: study.vocabulary_dir(m) for m in study.cfg.variants if study.cfg.variants[m].vocabulary}
    return AnalyzeConfig(output_dir=study.analysis_dir, tokenizer=study.shards / "tokenizer", corpora=corpora,
                         tasks=texts, models=dict(study.models), max_documents=study.cfg.analysis.max_documents,
                         seq_len=study.prepare.seq_len, perplexity_sequences=study.cfg.analysis.perplexity_sequences,
                         tokenizers=tokenizers, mixtures={r: c for r, c in mixtures.items() if c})


def stage_analyze(study: Study, say: Say) -> None:
    cfg = analyze_config(study)
    done = study.analysis_dir / "analysis.json"
    if done.is_file():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if set(previous["perplexity"]) == set(cfg.models) and \
                {t for row in previous["perplexity"].values() for t in row} == {t.name for t in cfg.tasks} and \
                set(previous.get("mix_coverage", {})) == set(cfg.mixtures) and \
                set(previous.get("fertility", {})) == {"base", *cfg.tokenizers}:
            say(f"[4/5] analyze: {done} is complete")
            return
    say(f"[4/5] analyze: {len(cfg.corpora)} corpora, {len(cfg.tasks)} task texts, {len(cfg.models)} models")
    analyze(cfg)
