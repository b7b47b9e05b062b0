"""`medtrain results DIR`: every finished run under DIR (a grid folder, any folder of runs, or one run folder)
-> one table of test scores, mean ± std over seeds, per (model, task, training -> evaluation language).

Besides the row's model, task and languages, the table shows only the config keys whose values differ across
the runs (dora's rule): a grid over learning rates gets a train.lr column, one over seeds gets none (seeds are
what the mean and std are taken over). Where one task and language pair has several rows, the best mean F1
is marked (bold in markdown, best=true in CSV). Written to DIR/results.md and DIR/results.csv, with PNG plots
in DIR/plots/ and each run's TensorBoard HParams session beside its own curves (medtrain/grid/hparams.py; a
grid run's are GRID_DIR/tensorboard/<name>, medtrain/grid/tensorboard.py). Only numbers and names: no text.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import shutil
from pathlib import Path

from medtrain.errors import UserError
from medtrain.grid.hparams import write_hparams
from medtrain.grid.plots import write_plots
from medtrain.grid.table import METRICS, Table, build_table, cell, find_run_dirs, load_run
from medtrain.io import write_text_atomic

OLD_HPARAMS = Path("tensorboard", "hparams")
"""Where earlier versions wrote the sessions, apart from the curves (each run listed twice): removed."""

# ----------------------------------------------------------------------------- rendering


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _fmt_stat(stat: tuple[float | None, float | None]) -> str:
    mean, std = stat
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def to_markdown(table: Table) -> str:
    header = ["model", "task", "train → eval", *table.columns, "runs", "F1", "precision", "recall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        f1 = _fmt_stat(row.stats["f1"])
        cells = [row.model, row.task, f"{row.train} → {row.eval}", *map(cell, row.settings), str(len(row.runs)),
                 f"**{f1}**" if row.best else f1, _fmt_stat(row.stats["precision"]), _fmt_stat(row.stats["recall"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.append("Test scores, mean ± std over seeds (runs); **bold**: the best mean F1 for its task and "
                 "training → evaluation languages. F1, precision and recall: NER, strict exact-offset entity scores "
                 "(micro; word-level seqeval scores are results.json word_f1); screening, patient scores at the "
                 "dev-chosen threshold.")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "task", "train", "eval", *table.columns, "runs", "seeds",
                     *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "best"])
    for row in table.rows:
        stats = [_fmt(v) for m in METRICS for v in row.stats[m]]
        writer.writerow([row.model, row.task, row.train, row.eval, *map(cell, row.settings), len(row.runs),
                         " ".join(str(r.seed) for r in row.runs), *stats, str(row.best).lower()])
    return out.getvalue()


# ----------------------------------------------------------------------------- the command


@dataclasses.dataclass(frozen=True)
class Written:
    runs: int
    markdown: str
    files: list[Path]


def write_results(folder: Path) -> Written:
    """Tables, plots and TensorBoard hparams for every finished run under `folder`, written into it."""
    if not folder.is_dir():
        raise UserError("not a folder (give a grid folder or a run folder)", folder)
    runs = [load_run(d) for d in find_run_dirs(folder)]
    table = build_table(runs)
    markdown = to_markdown(table)
    write_text_atomic(folder / "results.md", markdown)
    write_text_atomic(folder / "results.csv", to_csv(table))
    plots = write_plots(table, folder / "plots")
    if (folder / OLD_HPARAMS).is_dir():
        shutil.rmtree(folder / OLD_HPARAMS)
        with contextlib.suppress(OSError):  # left empty (not a grid's, which holds the runs' events)
            (folder / OLD_HPARAMS).parent.rmdir()
    sessions = write_hparams(runs, table)
    under = Path(os.path.commonpath([p.parent for p in sessions]))  # a grid's: GRID_DIR/tensorboard
    return Written(len(runs), markdown, [folder / "results.md", folder / "results.csv", *plots, under])
