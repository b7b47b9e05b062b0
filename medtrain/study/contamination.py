"""The report's account of decontamination: what `prepare`'s exclusion (by default every task's dev and test text,
`StudyConfig.decontaminate`) dropped from each model's pretraining corpora, and how much of each test set the raw
corpora held before it did.

Pure functions from the study plan and the `exclusion` entries of the shards' manifest.json (one per shards folder
a model reads: plain dicts, or None where prepare ran without exclude) to markdown lines. Only counts and shares,
never text; imports no torch (the plan only for its type).

An exclusion entry, as `medtrain.data.pack.prepare` writes it:

    {"rule": {"ngram": 13, "containment": 0.5, "by": ["patient_id"]},
     "sources": [{"name": "ner-es/es/test", "path": "...", "format": "brat", "sha256": "...", "documents": 12,
                  "ngrams": 3456, "patients": 0}, ...],
     "dropped": {corpus: {source name: {"documents": 3, "tokens": 1234}}},   # each document once, first match
     "raw_coverage": {corpus: {source name: 0.41}}}     # share of the source's distinct n-grams in the raw corpus
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtrain.study.config import BASELINE, EVALUATION_SPLITS, TaskConfig

if TYPE_CHECKING:
    from medtrain.study.plan import Study  # imports the stages' configs, and so torch

Exclusion = dict[str, Any]


def models_pretrained_here(study: Study) -> dict[str, list[str]]:
    """Each model pretrained by the study (the baseline when it is, then every variant) -> the corpora its own
    pretraining run reads (weight > 0)."""
    runs = {**({BASELINE: study.cfg.baseline.pretrain} if study.cfg.baseline.pretrain else {}),
            **study.cfg.variants}
    return {model: [c for c in study.corpus_names if run.corpora.get(c, 0.0) > 0] for model, run in runs.items()}


def adaptation_corpora(study: Study, model: str) -> list[str]:
    """The corpora a model was pretrained on here: its own run's and, for a staged variant, its `from:` ancestors'
    (the analysis's pretraining mix; a baseline pretrained here: its own)."""
    own = models_pretrained_here(study)
    chain = study.cfg.lineage(model) or [model]
    return [c for c in study.corpus_names if any(c in own[m] for m in chain)]


def _resolved(study: Study, path: str | Path) -> str:
    path = Path(path)
    if not path.is_absolute() and study.prepare.data_root is not None:
        path = study.prepare.data_root / path
    return os.path.abspath(path)


def task_sources(study: Study, exclusion: Exclusion, task: TaskConfig) -> list[str]:
    """The names of the exclusion's sources that are this task's evaluation text: named <task>/..., or at the
    path of one of its languages' dev or test sets (a path two tasks share is listed under the first's name)."""
    languages = dict.fromkeys(task.train_languages + task.test_languages)
    paths = {os.path.abspath(study.split(task, lang, split)) for lang in languages for split in EVALUATION_SPLITS}
    return [s["name"] for s in exclusion.get("sources", [])
            if s["name"].startswith(f"{task.name}/") or _resolved(study, s["path"]) in paths]


def test_source(study: Study, exclusion: Exclusion, task: TaskConfig, lang: str) -> str | None:
    """The name of the exclusion's source that is the task's test set in `lang`, if it has one."""
    path = os.path.abspath(study.split(task, lang, "test"))
    return next((s["name"] for s in exclusion.get("sources", [])
                 if s["name"] == f"{task.name}/{lang}/test" or _resolved(study, s["path"]) == path), None)


def _rule(exclusion: Exclusion) -> str:
    rule = exclusion.get("rule", {})
    words = (f"held at least {rule.get('containment', '?'):g} of one evaluation document's distinct word "
             f"{rule.get('ngram', '?')}-grams" if isinstance(rule.get("containment"), (int, float)) else
             "matched an evaluation document")
    by = rule.get("by") or []
    return words + (f", or whose {' or '.join(by)} named a patient of an evaluation source" if by else "")


def off_lines(study: Study) -> list[str]:
    """The bold warning when prepare ran without an exclusion; nothing otherwise."""
    if study.prepare.exclude is not None:
        return []
    why = "`decontaminate: false`" if not study.cfg.decontaminate else "`prepare.exclude` is null"
    return [f"**Decontamination was off: the tasks' dev and test text may be in the pretraining corpora** ({why}), "
            "so part of a variant's gain may come from having read the evaluation text. The default, "
            "`decontaminate: true`, drops such documents before pretraining and counts them in this report.", ""]


def removed_lines(study: Study, exclusions: dict[str, Exclusion | None]) -> list[str]:
    """Models section: per task (its dev and test sources) and model pretrained here, the documents and tokens
    dropped from that model's own corpora; `exclusions`: model -> the exclusion of the shards it reads."""
    if study.prepare.exclude is None:
        return []
    models = models_pretrained_here(study)
    known = {m: e for m, e in exclusions.items() if m in models and e}
    if not known:
        return ["Decontamination: the shards' manifest.json holds no exclusion record (prepare them again).", ""]
    first = next(iter(known.values()))
    origin = ("`prepare.exclude` as given" if "exclude" in study.cfg.prepare else
              "every task's dev and test sets, in every language the task reads")
    names = [m for m in models if m in known]

    def removed(model: str, sources: list[str] | None) -> str:
        dropped = known[model].get("dropped", {})
        rows = [row for corpus in models[model] for name, row in dropped.get(corpus, {}).items()
                if sources is None or name in sources]
        return f"{sum(r['documents'] for r in rows):,} / {sum(r['tokens'] for r in rows):,}"

    table = [[task.name, *(removed(m, task_sources(study, known[m], task)) for m in names)]
             for task in study.cfg.tasks]
    table.append(["all evaluation sources", *(removed(m, None) for m in names)])
    return ["Decontamination: before pretraining, `prepare` dropped every corpus document that "
            f"{_rule(first)}; the evaluation sources: {origin} ({len(first.get('sources', []))} sources). "
            "Documents / "
            "tokens dropped from each model's own pretraining corpora (weight > 0 in its `corpora`), per task "
            "whose dev or test text they matched (tokens of the tokenizer the model's shards use). A document "
            "that matched several sources is counted once, under the first, so one task can show another's "
            "matches as zero.", "",
            *_table(["task (dev + test)", *names], table), ""]


def leak_lines(study: Study, exclusions: dict[str, Exclusion | None]) -> list[str]:
    """Why section: per task test set and model pretrained here, the share of its distinct word n-grams that the
    raw corpora held before exclusion: the largest over the corpora the model was pretrained on here, and which
    corpus that was (the union over corpora is not recorded: the true share is at least this)."""
    models = models_pretrained_here(study)
    known = {m: e for m, e in exclusions.items() if m in models and e}
    if not known:
        return []
    names = [m for m in models if m in known]
    first = next(iter(known.values()))

    def share(model: str, task: TaskConfig, lang: str) -> str:
        source = test_source(study, known[model], task, lang)
        coverage = known[model].get("raw_coverage", {})
        found = [(coverage[c][source], c) for c in adaptation_corpora(study, model)
                 if source is not None and source in coverage.get(c, {})]
        if not found:
            return "-"
        value, corpus = max(found, key=lambda vc: vc[0])
        return f"{value:.3f} ({corpus})" if value > 0 else f"{value:.3f}"

    rows = [[f"{task.name}/{lang}/test", *(share(m, task, lang) for m in names)]
            for task in study.cfg.tasks for lang in task.test_languages]
    return ["### What decontamination kept out", "",
            f"Share of each test set's distinct word {first.get('rule', {}).get('ngram', '?')}-grams that the raw "
            "pretraining corpora held before exclusion: the largest share over the corpora the model was "
            "pretrained on here (its own and its `from:` ancestors'), with that corpus (a lower bound of what "
            "all of them held together): what the model could have read of its test sets without the exclusion. "
            "The documents that held most of one test document were dropped (see Models).", "",
            *_table(["test set", *names], rows), ""]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def read_exclusions(study: Study) -> dict[str, dict[str, Any] | None]:
    """Each model pretrained here -> the `exclusion` of the manifest.json of the shards it reads (None: none)."""
    out: dict[str, dict[str, Any] | None] = {}
    for model in models_pretrained_here(study):
        path = study.shards_for(model) / "manifest.json"
        out[model] = json.loads(path.read_text(encoding="utf-8")).get("exclusion") if path.is_file() else None
    return out
