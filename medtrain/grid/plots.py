"""PNG plots of a results table (matplotlib, Agg: no display needed on a cluster).

Per task: `heatmap-<task>.png`, one panel per setting (model and the differing parameters), training
language(s) x evaluation language, mean test F1 in each cell; `bars-<task>.png`, mean test F1 per training ->
evaluation pair, one bar per setting, the std over seeds as error bars.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from medtrain.grid.table import Row, Table, cell  # noqa: E402
from medtrain.io import atomic_open  # noqa: E402


def setting_labels(rows: list[Row], columns: list[str]) -> dict[int, str]:
    """Each row's setting (model and parameters) by id(row), naming only the parameters that vary within
    these rows: a whole grid's differing columns (other tasks' keys included) make labels too long to fit."""
    varying = [i for i, _ in enumerate(columns) if len({cell(r.settings[i]) for r in rows}) > 1]  # lists too
    return {id(r): ", ".join([r.model, *(f"{columns[i]}={cell(r.settings[i])}" for i in varying)]) for r in rows}


def write_plots(table: Table, folder: Path) -> list[Path]:
    by_task: dict[str, list[Row]] = defaultdict(list)
    for row in table.rows:
        by_task[row.task].append(row)
    written = []
    for task, rows in sorted(by_task.items()):
        labels = setting_labels(rows, table.columns)
        written.append(_save(_heatmaps(task, rows, labels), folder / f"heatmap-{task}.png"))
        written.append(_save(_bars(task, rows, labels), folder / f"bars-{task}.png"))
    return written


def _save(figure: plt.Figure, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def _mean(row: Row) -> float:
    mean = row.stats["f1"][0]
    return math.nan if mean is None else mean


def _heatmaps(task: str, rows: list[Row], labels: dict[int, str]) -> plt.Figure:
    settings = sorted(set(labels.values()))
    trains = sorted({r.train for r in rows})
    evals = sorted({r.eval for r in rows})
    figure, axes = plt.subplots(1, len(settings), squeeze=False, layout="constrained",
                                figsize=(1.5 + (1.2 + 0.7 * len(evals)) * len(settings), 1.6 + 0.6 * len(trains)))
    for k, (ax, setting) in enumerate(zip(axes[0], settings)):
        grid = np.full((len(trains), len(evals)), np.nan)
        for r in rows:
            if labels[id(r)] == setting:
                grid[trains.index(r.train), evals.index(r.eval)] = _mean(r)
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
        ax.set_xticks(range(len(evals)), evals)
        ax.set_yticks(range(len(trains)), trains)
        ax.set_xlabel("evaluation language")
        if k == 0:
            ax.set_ylabel("training language(s)")
        ax.set_title(setting, fontsize=8)
    figure.colorbar(image, ax=axes[0].tolist(), label="test F1 (mean over seeds)")
    figure.suptitle(f"{task}: cross-lingual test F1")
    return figure


def _bars(task: str, rows: list[Row], labels: dict[int, str]) -> plt.Figure:
    settings = sorted(set(labels.values()))
    pairs = sorted({(r.train, r.eval) for r in rows})
    figure, ax = plt.subplots(figsize=(2 + 0.5 * len(pairs) * len(settings), 3.5), layout="constrained")
    width = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        by_pair = {(r.train, r.eval): r for r in rows if labels[id(r)] == setting}
        means = [_mean(by_pair[p]) if p in by_pair else math.nan for p in pairs]
        stds = [(by_pair[p].stats["f1"][1] or 0.0) if p in by_pair else 0.0 for p in pairs]
        ax.bar(np.arange(len(pairs)) + (k - (len(settings) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=setting)
    ax.set_xticks(range(len(pairs)), [f"{t}→{e}" for t, e in pairs])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test F1 (mean ± std over seeds)")
    ax.set_title(task)
    figure.legend(fontsize=7, loc="outside lower center", ncols=min(3, len(settings)))  # below: any label width fits
    return figure
