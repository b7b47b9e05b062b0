"""Readable TensorBoard names for a grid's runs: GRID_DIR/tensorboard/<name> -> ../runs/<signature>/tensorboard.

Each run writes its curves in its own folder, named by its signature; `tensorboard --logdir GRID_DIR` (or a
study folder) would list only hashes. Each link is named by what tells the run apart (`run_labels`: model,
task, training -> test languages, seed, differing parameters), so the same runs also appear by name.

Directory symlinks, because TensorBoard's run discovery (io_wrapper.ListRecursivelyViaWalking: gfile.walk,
which tests each entry with isdir, following links) descends into them, and a link made before its run starts
shows the run's event files as they appear, resumes included: nothing to refresh when a run completes.
Relative targets, so the grid folder can be moved. Refreshed on every submission and `medtrain grid results`;
links of runs no longer in the grid are removed, nothing else in the folder is touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medtrain.grid.spec import Grid
from medtrain.grid.table import describe, run_labels

FOLDER = "tensorboard"
"""GRID_DIR/tensorboard, beside the HParams summaries that `medtrain results` writes in its hparams/."""


MAX_NAME = 120
"""Characters of a link name; file systems allow 255 bytes, and many differing parameters exceed that."""


def link_name(label: str, signature: str) -> str:
    """`mbert ner es→es+ro seed=0` -> `mbert_ner_es-to-es+ro_seed0`: a portable folder name; a name longer than
    MAX_NAME is cut and ends in the run's signature, so it stays unique."""
    name = label.replace("→", "-to-").replace("seed=", "seed").replace("/", "-").replace(" ", "_")
    name = re.sub(r"[^\w.+=,-]", "-", name)
    return name if len(name) <= MAX_NAME else f"{name[:MAX_NAME - len(signature) - 4]}..._{signature}"


def link_runs(grid: Grid) -> dict[str, Path]:
    """Create or update GRID_DIR/tensorboard/<name> for every run; returns {signature: link}."""
    folder = grid.grid_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    labels = run_labels([describe(r.config, r.run_dir) for r in grid.runs])
    names = [link_name(label, run.signature) for label, run in zip(labels, grid.runs)]
    if len(set(names)) < len(names):  # cannot happen for distinct configs, but never link two runs to one name
        names = [f"{name}_{run.signature}" for name, run in zip(names, grid.runs)]
    links = {run.signature: folder / name for run, name in zip(grid.runs, names)}
    for run in grid.runs:
        _link(links[run.signature], os.path.relpath(run.run_dir / "tensorboard", folder))
    for entry in folder.iterdir():
        if entry.is_symlink() and entry not in links.values():
            entry.unlink()
    return links


def _link(link: Path, target: str) -> None:
    """Atomically (a new link renamed over the old), so TensorBoard never sees the name missing."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() and not link.is_symlink():
        return  # a real folder of that name is someone else's
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)
