"""TensorBoard lists each grid run once, by its name (medtrain/grid/names.py).

Each run writes its events to GRID_DIR/tensorboard/<name>/ (its config's tensorboard_dir, set by the grid), so
`tensorboard --logdir GRID_DIR` shows it as `tensorboard/<name>` (a study's folder: `grid/tensorboard/<name>`),
and RUN_DIR = GRID_DIR/runs/<signature>/ holds no events. Not a link: TensorBoard's run discovery follows every
link to a folder (the Python reader: io_wrapper.ListRecursivelyViaWalking -> gfile.walk, which tests each entry
with os.path.isdir; the Rust data server: walkdir with follow_links(true)) and names a run by the path it found
it under, so a linked folder is listed once per path that reaches it. The links GRID_DIR/tensorboard/<name> ->
../runs/<signature>/tensorboard that earlier versions made showed every run twice; they are removed here.

A run's name can change with the grid (a learning-rate axis adds `train.lr=` to its task's names). The refresh,
at every submission and `medtrain grid results`, moves the events of each run that is not pending or running
into the folder of its current name and records it in the run's config.yaml, so a resumed run continues there
(finetune resumes only under the config it started with); runs of an earlier layout, with their events in
RUN_DIR/tensorboard, move the same way. Each events folder holds the signature of its run (MARKER): a run that
takes over the name of one no longer in the grid (a changed base learning rate: new signatures, the same names)
does not write into that run's curves, which move aside to `<name> · <its signature>`. A run's HParams session
is written beside its curves (medtrain/grid/hparams.py), so the HParams tab lists it once too.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from medtrain.cluster.jobs import LIVE
from medtrain.grid.names import SEP
from medtrain.grid.spec import EVENTS_FOLDER, EVENTS_KEY, Grid, Run
from medtrain.grid.status import RunStatus, grid_status
from medtrain.grid.table import EVENTS
from medtrain.io import write_yaml_atomic

FOLDER = EVENTS_FOLDER
"""GRID_DIR/tensorboard: one folder of events per run, named by the run."""
MARKER = ".signature"
"""In each events folder, the run it belongs to (TensorBoard reads only files named *tfevents*)."""


def link_runs(grid: Grid, statuses: list[RunStatus] | None = None) -> dict[str, Path]:
    """Put each run's events where TensorBoard lists it once, by name; returns {signature: events folder}.
    `statuses`: the grid's, where the caller has them (else asked for: runs with live jobs are not moved)."""
    folder = grid.grid_dir / FOLDER
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_symlink():  # an earlier version's link: a second listing of a run
                entry.unlink()
    places = {run.signature: Path(run.config[EVENTS_KEY]) for run in grid.runs}
    live = {s.run.signature for s in (grid_status(grid) if statuses is None else statuses) if s.state in LIVE}
    for run in grid.runs:
        if run.signature not in live:
            _claim(places[run.signature], run.signature)
            _move_events(run, places[run.signature])
    return places


def _claim(folder: Path, signature: str) -> None:
    """`folder` for this run; another run's events there move aside, to `<folder> · <its signature>`."""
    if folder.is_dir() and any(entry.name != MARKER for entry in folder.iterdir()):
        owner = _owner(folder) or "unknown"
        if owner != signature:
            _move_into(folder, folder.with_name(f"{folder.name}{SEP}{owner}"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(signature + "\n")


def _owner(folder: Path) -> str | None:
    return (folder / MARKER).read_text().strip() if (folder / MARKER).is_file() else None


def _move_into(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        os.replace(entry, target / entry.name)
    source.rmdir()


def _move_events(run: Run, target: Path) -> None:
    """A started run's events that are elsewhere (under another name, moved aside, or in RUN_DIR/tensorboard):
    into `target`, and config.yaml says so."""
    saved_path = run.run_dir / "config.yaml"
    if not saved_path.is_file():
        return  # not started: it writes to target from its first step
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    before = Path(saved.get(EVENTS_KEY) or run.run_dir / EVENTS)
    for source in (before, before.with_name(f"{before.name}{SEP}{run.signature}")):
        if source != target and source.is_dir() and not source.is_symlink() and \
                _owner(source) in (None, run.signature):  # not a folder another run has taken over since
            _move_into(source, target)
    if saved.get(EVENTS_KEY) != str(target):
        write_yaml_atomic(saved_path, {**saved, EVENTS_KEY: str(target)})
