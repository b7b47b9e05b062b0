"""TensorBoard HParams summaries, so a grid's runs compare side by side (`tensorboard --logdir DIR/tensorboard`,
HParams tab).

The layout TensorBoard's hparams plugin reads: the experiment (every hyper-parameter with its values, every
metric) at the root, one session per run in a sub-folder (its hyper-parameters, then its metrics as scalars).
Hyper-parameters: model, task, training languages, seed and the table's differing columns; metrics: test F1
per evaluation language and dev F1. The folder is rebuilt whole each time, so rerunning adds no duplicates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medtrain.grid.table import RunResult, Table
from medtrain.io import replace_dir_atomic


def _scalar(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value)


def session(run: RunResult, table: Table) -> tuple[dict[str, Any], dict[str, float]]:
    """(hyper-parameters, metrics) of one run."""
    hparams = {"model": table.models[run.model], "task": run.task, "train": run.train, "seed": run.seed,
               **{c: _scalar(run.params.get(c, "")) for c in table.columns}}
    metrics = {f"test/f1_{lang}": s["f1"] for lang, s in run.scores.items() if s["f1"] is not None}
    if run.dev_f1 is not None:
        metrics["eval/f1"] = run.dev_f1  # the best epoch's dev F1, named as training logs it
    return hparams, metrics


def write_hparams(runs: list[RunResult], table: Table, folder: Path, out: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    sessions = [(run, *session(run, table)) for run in runs]
    names_of_runs = [run.run_dir.name for run in runs]
    if len(set(names_of_runs)) < len(runs):  # runs in several folders: name each by its path below `folder`
        names_of_runs = ["-".join(run.run_dir.relative_to(folder).parts) for run in runs]
    names = sorted({k for _, hp, _ in sessions for k in hp})
    metric_names = sorted({k for _, _, m in sessions for k in m})
    # The experiment: each hyper-parameter's values (all strings become a discrete domain), each metric.
    example = {k: next(hp[k] for _, hp, _ in sessions if k in hp) for k in names}
    domains = {k: sorted({hp[k] for _, hp, _ in sessions if k in hp}) for k in names
               if all(isinstance(hp.get(k, ""), str) for _, hp, _ in sessions)}

    def fill(tmp: Path) -> None:
        experiment, _, _ = hparams_summaries(example, {m: 0.0 for m in metric_names}, domains)
        with SummaryWriter(log_dir=str(tmp)) as writer:
            writer.file_writer.add_summary(experiment)
        for name, (_, hp, metrics) in zip(names_of_runs, sessions):
            _, start, end = hparams_summaries(hp, metrics)
            with SummaryWriter(log_dir=str(tmp / name)) as writer:
                writer.file_writer.add_summary(start)
                for metric, value in metrics.items():
                    writer.add_scalar(metric, value, 0)
                writer.file_writer.add_summary(end)

    replace_dir_atomic(out, fill)
