"""The study's report: every run's per-unit test scores grouped per model and language pair, compared with the
baseline (medtrain.study.compare), written as report.md, report.json and differences.png. Only numbers, never text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.io import atomic_open, write_json_atomic, write_text_atomic
from medtrain.study import contamination
from medtrain.study.collect import METRIC_NAMES, Collected, collect_cells, compare, mean
from medtrain.study.config import BASELINE, CompareConfig
from medtrain.study.plan import Say, Study



# ----------------------------------------------------------------------------- stage 5: report


_F1_WORDS = "exact-offset entity F1 for NER, patient F1 at the dev-chosen threshold for screening"


def _fmt(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def results_table(study: Study, comparison: dict[str, Any]) -> str:
    """Task x (training -> test language) rows, one column per model: mean ± std over seeds; bold: best."""
    models = list(study.replicates)
    rows = []
    for task, result in comparison.items():
        for pair in next(iter(result["scores"].values())):
            stats = [result["scores"][m][pair] for m in models]
            best = max((s["mean"] for s in stats if s["mean"] is not None), default=None)
            cells = [("**{}**" if s["mean"] == best and len(models) > 1 else "{}").format(
                _fmt(s["mean"]) + (f" ± {s['std']:.3f}" if s["std"] is not None else "")) for s in stats]
            rows.append([task, result["metric_name"], pair.replace("->", " → "), *cells])
    return "\n".join(_table(["task", "metric", "train → test", *models], rows)) + "\n"


def _interval(lo: float | None, hi: float | None) -> str:
    return f"[{_fmt(lo, True)}, {_fmt(hi, True)}]"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _differences_section(comparison: dict[str, Any], cfg: CompareConfig) -> list[str]:
    level = f"{100 * (1 - cfg.alpha):.0f}%"
    rows = [[task, result["metric_name"], f"{d['variant']} − {d['against']}", f"{d['train']} → {d['test']}",
             _fmt(d["delta"], True), _interval(d["lo"], d["hi"]), _p(d["p"]), "yes" if d["significant"] else "no",
             _interval(d["lo_adjusted"], d["hi_adjusted"]), _p(d["p_adjusted"]),
             "yes" if d["significant_adjusted"] else "no"]
            for task, result in comparison.items() for d in result["differences"]]
    correction = (f"Holm's step-down over each task's comparisons ({_family_sizes(comparison)}; family-wise error "
                  f"{cfg.alpha:g}); the adjusted interval is the one at the level Holm judges that comparison at"
                  if cfg.correction == "holm" else "no correction, adjusted equals raw")
    return ["## Pairwise differences", "",
            f"Each pair of models (b − a) in the task's metric; {level} hierarchical bootstrap interval over test "
            f"units (paired), pretraining replicates and fine-tuning seeds ({cfg.bootstrap} draws), two-sided "
            f"bootstrap p. Adjusted: {correction}. *Beyond*: the interval excludes 0.", "",
            _resampled(comparison), "",
            *_table(["task", "metric", "b − a", "train → test", "difference", f"{level} interval", "p", "beyond",
                     "adjusted interval", "adjusted p", "beyond (adjusted)"], rows),
            "", "![differences](differences.png)", ""]


def _resampled(comparison: dict[str, Any]) -> str:
    """What the bootstrap had to resample: per model, pretraining replicates x fine-tuning seeds (a range where
    replicates differ), and per task and language pair, test units."""
    def seeds(counts: dict[str, Any]) -> str:
        low, high = min(counts["seeds"]), max(counts["seeds"])
        return f"{counts['replicates']} × {low if low == high else f'{low}-{high}'}"

    models: dict[str, str] = {}
    units: dict[str, int] = {}
    for task, result in comparison.items():
        for d in result["differences"]:
            models.setdefault(d["against"], seeds(d["counts"]["a"]))
            models.setdefault(d["variant"], seeds(d["counts"]["b"]))
            units[f"{task} {d['train']} → {d['test']}"] = d["counts"]["units"]
    return ("Resampled: pretraining replicates × fine-tuning seeds per model: "
            + ", ".join(f"{m} {c}" for m, c in models.items()) + "; test units: "
            + ", ".join(f"{k} {n}" for k, n in units.items()) + ".")


def _family_sizes(comparison: dict[str, Any]) -> str:
    return ", ".join(f"{task}: {len(r['differences'])}" for task, r in comparison.items())


def _winners_section(comparison: dict[str, Any]) -> list[str]:
    rows = []
    for task, result in comparison.items():
        for pair, decided in result["winners"].items():
            best = decided["winner"]
            rows.append([task, result["metric_name"], pair.replace("->", " → "),
                         best or "no clear winner", _fmt(result["scores"][best][pair]["mean"]) if best else "-",
                         ", ".join(decided["tied"]) if not best else "-"])
    return ["## Winner per task", "",
            "On each in-language pair: the model that beats every other model beyond the adjusted interval; "
            "otherwise no clear winner, and the tied models (those no model beats). A pair left out of "
            "compare.pairs decides nothing.", "",
            *_table(["task", "metric", "train → test", "winner", "score (mean)", "tied"], rows), ""]


def _matrix_section(study: Study, comparison: dict[str, Any]) -> list[str]:
    lines = ["## Cross-lingual matrix", "", "Mean over seeds; rows: training language, columns: test language.", ""]
    for task in study.cfg.tasks:
        result = comparison[task.name]
        header = ["model", "train", *task.test_languages]
        rows = [[m, t, *(_fmt(result["scores"][m][f"{t}->{e}"]["mean"]) for e in task.test_languages)]
                for m in study.replicates for t in task.train_languages]
        lines += [f"### {task.name} ({result['metric_name']})", "", *_table(header, rows), ""]
    plots = sorted((study.grid_dir / "plots").glob("heatmap-*.png"))
    lines += [f"![{p.stem}]({p.relative_to(study.out)})" for p in plots]
    return lines + ["", f"(The heatmaps show each run's test F1: {_F1_WORDS}, whichever metric a task compares.)",
                    ""] if plots else lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "-"


def _label_space_section(study: Study, collected: Collected) -> list[str]:
    """Per NER task and training language: each test language's types after the label map, the shared (scored)
    ones, the unscored ones and the entities that labels.keep dropped."""
    lines = ["## Label spaces", "",
             "NER types after each task's `labels` map, per training → test language. Only the shared types are "
             "scored: a test language's other types count neither as gold nor as predictions.", ""]
    for task in study.cfg.tasks:
        spaces = {train: space for (name, train), space in collected.label_spaces.items() if name == task.name}
        if not spaces:
            continue
        keep = f"; kept types: {', '.join(task.labels.keep)}" if task.labels and task.labels.keep else ""
        rows = [[f"{train} → {lang}", ", ".join(space["train"]) or "-", ", ".join(types) or "-",
                 ", ".join(space["scored"][lang]) or "-", ", ".join(space["unscored"][lang]) or "-",
                 _counts(space["dropped"]["test"].get(lang, {}))]
                for train, space in spaces.items() for lang, types in space["test"].items()]
        mapped = [f"{lang}: " + ", ".join(f"{source} → {shared}" for source, shared in rename.items())
                  for lang, rename in (task.labels.map.items() if task.labels else ())]
        lines += [f"### {task.name}{keep}", "", *(f"- map {line}" for line in mapped), *([""] if mapped else []),
                  *_table(["train → test", "training types", "test types", "scored (shared)", "unscored",
                           "dropped by keep (test)"], rows), ""]
    return lines if len(lines) > 4 else []


def _per_type_section(study: Study, collected: Collected) -> list[str]:
    """Per NER task: the headline metric per entity type, per model, mean over seeds."""
    lines = ["## Per-type scores", "", f"NER only: {METRIC_NAMES[('ner', 'f1')]} per entity type (the scored types), "
             "mean over runs; support: gold entities in the test set.", ""]
    models = list(study.replicates)
    for task in study.cfg.tasks:
        if study.kind(task) != "ner":
            continue
        rows = []
        for train in task.train_languages:
            for lang in task.test_languages:
                seeds = {m: collected.per_type.get((task.name, m, train, lang), []) for m in models}
                types = sorted({t for runs in seeds.values() for per_type in runs for t in per_type})
                for entity_type in types:
                    support = next((p[entity_type]["support"] for runs in seeds.values() for p in runs
                                    if entity_type in p), 0)
                    rows.append([f"{train} → {lang}", entity_type, str(support),
                                 *(_fmt(mean([p[entity_type]["f1"] if entity_type in p else None for p in seeds[m]]))
                                   for m in models)])
        if rows:
            lines += [f"### {task.name} ({METRIC_NAMES[('ner', 'f1')]} per type)", "",
                      *_table(["train → test", "type", "support", *models], rows), ""]
    return lines if len(lines) > 4 else []


def _why_rows(study: Study, comparison: dict[str, Any], analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant, task and language pair: the gain over the baseline beside the change in masked-LM perplexity
    and the variant's pretraining-corpus coverage, on the test text (and the training text), mean over replicates."""
    perplexity, coverage = analysis.get("perplexity", {}), analysis.get("mix_coverage", {})

    rows = []
    for task in study.cfg.tasks:
        result = comparison[task.name]
        for variant in study.cfg.variants:
            replicates = study.replicates[variant]
            for t in task.train_languages:
                for e in task.test_languages:
                    texts = {"test": f"{task.name}/{e}/test", "train": f"{task.name}/{t}/train"}
                    stats = result["scores"]
                    gain = None if None in (stats[variant][f"{t}->{e}"]["mean"], stats[BASELINE][f"{t}->{e}"]["mean"]) \
                        else stats[variant][f"{t}->{e}"]["mean"] - stats[BASELINE][f"{t}->{e}"]["mean"]
                    row = {"variant": variant, "task": task.name, "pair": f"{t} → {e}", "gain": gain}
                    for split, text in texts.items():
                        base = perplexity.get(BASELINE, {}).get(text)
                        row[f"perplexity_change_{split}"] = mean(
                            [perplexity[r][text] - base for r in replicates
                             if base is not None and text in perplexity.get(r, {})])
                        row[f"coverage_{split}"] = mean([coverage.get(r, {}).get(text) for r in replicates])
                    row.update(perplexity_change=row["perplexity_change_test"], coverage=row["coverage_test"])
                    rows.append(row)
    return rows


def _why_section(study: Study, comparison: dict[str, Any], collected: Collected,
                 exclusions: dict[str, dict[str, Any] | None]) -> list[str]:
    """The gains linked to the measurements that should explain them, with Spearman correlations across the
    (variant, task, language pair) rows; then NER's per-type gains; then how much of each test set the raw
    corpora held before decontamination; then the analysis's own tables."""
    from medtrain.study.analysis import linkage

    analysis = json.loads((study.analysis_dir / "analysis.json").read_text(encoding="utf-8"))
    rows = _why_rows(study, comparison, analysis)
    usable = [r for r in rows if None not in (r["gain"], r["perplexity_change"], r["coverage"])]
    link = linkage(usable)
    table = [[r["variant"], r["task"], r["pair"], _fmt(r["gain"], True), _fmt(r["perplexity_change_test"], True),
              _fmt(r["perplexity_change_train"], True), _fmt(r["coverage_test"]), _fmt(r["coverage_train"])]
             for r in rows]
    rho = {k: "n/a" if link[k] is None else f"{link[k]:+.2f}" for k in ("gain_vs_perplexity", "gain_vs_coverage")}
    lines = ["## Why: the gains beside the data behind them", "",
             "Per variant, task and language pair: the gain over the baseline (task metric, mean over runs), the "
             "change in masked-LM perplexity (variant − baseline; negative: the variant knows the text better) and "
             "the share of the text's running words that the variant's pretraining corpora contain, on the test "
             "text of the test language and on the training text of the training language.", "",
             *_table(["variant", "task", "train → test", "gain", "Δ perplexity (test text)",
                      "Δ perplexity (training text)", "coverage (test text)", "coverage (training text)"], table),
             "", f"Spearman correlation across the {link['n']} rows: gain vs Δ perplexity {rho['gain_vs_perplexity']} "
                 f"(a gain should come with a drop: negative), gain vs coverage {rho['gain_vs_coverage']}."
                 + (f" {link['caveat']}" if link["caveat"] else ""), "", *_vocabulary_caveat(study),
             *_per_type_gains(study, collected), *contamination.leak_lines(study, exclusions)]
    text = (study.analysis_dir / "analysis.md").read_text(encoding="utf-8")
    demoted = [("#" + line) if line.startswith("#") else line for line in text.splitlines()]
    plots = [p for p in ("overlap.png", "perplexity.png") if (study.analysis_dir / p).is_file()]
    return [*lines, "### The measurements", "", *demoted, "", *(f"![{p}](analysis/{p})" for p in plots), ""]


def _vocabulary_caveat(study: Study) -> list[str]:
    extended = [v for v in study.cfg.variants if study.extension_owner(v)]
    if not extended:
        return []
    return [f"{', '.join(extended)} read the text with an extended vocabulary: their perplexity is per token of "
            "their own tokenizer (fewer, longer tokens), so its change against the baseline is not like for like.", ""]


def _per_type_gains(study: Study, collected: Collected) -> list[str]:
    """NER: each variant's gain over the baseline per entity type (mean per-type F1 over runs)."""
    rows = []
    for (task, model, train, lang), runs in collected.per_type.items():
        base = collected.per_type.get((task, BASELINE, train, lang), [])
        if model == BASELINE or not base:
            continue
        for entity_type in sorted({t for p in runs + base for t in p}):
            a = mean([p[entity_type]["f1"] if entity_type in p else None for p in base])
            b = mean([p[entity_type]["f1"] if entity_type in p else None for p in runs])
            rows.append([model, task, f"{train} → {lang}", entity_type,
                         _fmt(None if a is None or b is None else b - a, True)])
    if not rows:
        return []
    return ["### Per-type gains (NER)", "", f"Variant − baseline, {METRIC_NAMES[('ner', 'f1')]} per type, mean over "
            "runs.", "", *_table(["variant", "task", "train → test", "type", "gain"], sorted(rows)), ""]


def _models_section(study: Study, exclusions: dict[str, dict[str, Any] | None]) -> list[str]:
    """Where each model starts, what it read and how it was mixed, the token share each corpus really had, and
    what decontamination dropped from its corpora."""
    cfg = study.cfg
    lines = ["## Models", ""]
    if cfg.baseline.model is not None:
        lines.append(f"- **{BASELINE}**: {cfg.baseline.model} (un-adapted)")
    else:
        lines.append(f"- **{BASELINE}**: pretrained here on {', '.join(cfg.baseline.pretrain.corpora)} "
                     f"({study.pretrain[BASELINE].train.max_steps} steps)")
    for name, run in cfg.variants.items():
        first = study.replicates[name][0]
        mix = run.sampling + (f", T = {run.temperature:g}" if run.sampling == "temperature" else "")
        vocabulary = f"; vocabulary + {run.vocabulary.add} words" if run.vocabulary else ""
        seeds = f"; {len(cfg.pretrain_seeds)} replicates (pretraining seeds {', '.join(map(str, cfg.pretrain_seeds))})" \
            if cfg.pretrain_seeds else ""
        lines.append(f"- **{name}**: {run.start} + {study.pretrain[first].train.max_steps} steps on "
                     f"{', '.join(f'{c} ({w:g})' for c, w in run.corpora.items())}, sampling {mix}{vocabulary}{seeds}")
    seeds = " ".join(map(str, cfg.seeds))
    lines += ["", f"Fine-tuned on {len(cfg.tasks)} tasks with seeds {seeds}; the table shows mean ± std over runs "
              "(every pretraining replicate and fine-tuning seed).", "", *_token_share_table(study),
              *contamination.removed_lines(study, exclusions)]
    return lines


def _token_share_table(study: Study) -> list[str]:
    """Per pretraining run, each corpus's realised share of the training tokens (mixture.json), with the target
    share in parentheses; the mean over a model's replicates."""
    shares: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for model, replicates in study.replicates.items():
        for replicate in replicates:
            path = study.pretrain_dir(replicate) / "mixture.json"
            if replicate in study.pretrain and path.is_file():
                corpora = json.loads(path.read_text(encoding="utf-8"))["corpora"]
                for corpus, row in corpora.items():
                    shares.setdefault(model, {}).setdefault(corpus, []).append((row["share"], row["target"]))
    corpora = [c for c in study.corpus_names if any(c in row for row in shares.values())]
    if not corpora:
        return []
    rows = [[model, *(_share(row.get(c, [])) for c in corpora)] for model, row in shares.items()]
    return ["Realised share of each pretraining run's training tokens per corpus (target in parentheses):", "",
            *_table(["model", *corpora], rows), ""]


def _share(values: list[tuple[float, float]]) -> str:
    if not values or not any(share or target for share, target in values):
        return "-"
    return f"{np.mean([s for s, _ in values]):.3f} ({np.mean([t for _, t in values]):.3f})"


def plot_differences(comparison: dict[str, Any], path: Path) -> None:
    """Every difference (b - a) with its raw interval, one row per task, pair of models and language pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{task} {d['variant']}−{d['against']} {d['train']}→{d['test']}", d) for task, r in comparison.items()
            for d in r["differences"] if d["delta"] is not None]
    figure, ax = plt.subplots(figsize=(6.5, 0.8 + 0.3 * len(rows)), layout="constrained")
    for i, (_, d) in enumerate(rows):
        lo, hi = d["lo"] if d["lo"] is not None else d["delta"], d["hi"] if d["hi"] is not None else d["delta"]
        ax.errorbar(d["delta"], i, xerr=[[d["delta"] - lo], [hi - d["delta"]]], fmt="o", capsize=3,
                    color="tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("b - a (task metric), with raw interval")
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)
    plt.close(figure)


def _newer(path: Path, inputs: list[Path]) -> bool:
    return path.is_file() and all(p.stat().st_mtime_ns <= path.stat().st_mtime_ns for p in inputs)


def stage_report(study: Study, say: Say) -> str:
    """Write report.md (+ report.json, differences.png, the grid's table and plots); returns the results table."""
    from medtrain.grid.results import write_results
    from medtrain.grid.spec import load_grid

    grid = load_grid(study.grid_file)
    shards = {study.shards_for(m) / "manifest.json" for m in study.replicates}
    inputs = [run.run_dir / "results.json" for run in grid.runs] + [study.analysis_dir / "analysis.json",
                                                                    *sorted(p for p in shards if p.is_file())]
    summary = study.out / "report.json"
    if _newer(study.report, inputs) and summary.is_file():
        say(f"[5/5] report: {study.report} is complete")
        return json.loads(summary.read_text(encoding="utf-8"))["table"]
    say(f"[5/5] report: comparing {len(grid.runs)} runs ({study.cfg.compare.bootstrap} bootstrap replicates each)")
    collected = collect_cells(study, grid)
    comparison = compare(study, collected.cells)
    table = results_table(study, comparison)
    all_runs = write_results(study.grid_dir).markdown
    plot_differences(comparison, study.out / "differences.png")
    exclusions = contamination.read_exclusions(study)
    lines = [f"# Study report: {study.out.name}", "", *contamination.off_lines(study),
             *_models_section(study, exclusions), "## Results", "", table,
             *_winners_section(comparison), *_differences_section(comparison, study.cfg.compare),
             *_matrix_section(study, comparison), *_label_space_section(study, collected),
             *_per_type_section(study, collected), *_why_section(study, comparison, collected, exclusions),
             "## All fine-tuning runs", "",
             f"From `medtrain results {study.grid_dir}`; its F1, precision and recall are {_F1_WORDS} "
             "(the tables above name each task's own metric):", "", all_runs]
    write_json_atomic(summary, {"table": table, "tasks": comparison})
    write_text_atomic(study.report, "\n".join(lines))
    return table
