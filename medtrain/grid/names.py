"""One readable name per grid run, the same everywhere: `medtrain grid status`, the progress lines of a
submission, TensorBoard (the run's events folder, GRID_DIR/tensorboard/<name>) and its HParams session.

    clinical · ner-ro · ro→es+nl+ro · seed 1
    mbert · ner-es · es→es+ro · seed 0 · train.lr=5e-05

Model (`short_names`: a pretraining export is named by its run), task, training → test languages, seed, then
only the settings that vary among that task's runs. A run's config does not hold a study's task name, so the
task is named from what it holds, its kind and training languages (a study's `ner-ro` is ner trained on ro);
the task's runs are those with the same kind and the same data (training, dev and test sets). Settings are
`key=value` with dotted config keys, as in `medtrain finetune CONFIG k=v` and the results table's columns.

The signature is not in the name (it is the status table's own column and an HParams value). Names are unique
within a grid: runs that would share one get what tells them apart, and the signature as a last resort.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medtrain.grid.table import flatten, short_names

SEP = " · "
ARROW = "→"
NOT_SETTINGS = ("output_dir", "cache_dir", "progress", "tensorboard_dir", "model", "task", "train.seed")
"""Where a run writes, and what the name's fixed parts say (model, task, seed)."""
TASK_DATA = "data."
"""Keys that make the task: runs differing in them are different tasks, named apart by their languages."""
MAX_FOLDER_BYTES = 200
"""A folder name's length in bytes (UTF-8: · is 2, → is 3); file systems allow 255."""


def task_label(config: dict[str, Any]) -> str:
    """`ner-ro`: the task kind and its training languages."""
    return f"{config['task']}-{'+'.join(config['data']['train'])}"


def languages(config: dict[str, Any]) -> str:
    """`ro→es+nl+ro`: training → test languages."""
    return f"{'+'.join(config['data']['train'])}{ARROW}{'+'.join(config['data']['test'])}"


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The config as dotted keys, less bookkeeping and the name's fixed parts; screening keys only for screening."""
    flat = {k: v for k, v in flatten(config).items() if k not in NOT_SETTINGS}
    return {k: v for k, v in flat.items() if config["task"] == "screening" or not k.startswith("screening.")}


def text(value: Any) -> str:
    """A value in a name: JSON for numbers, booleans, lists; long paths keep their last two parts."""
    if not isinstance(value, str):
        return json.dumps(value)
    return "…/" + "/".join(Path(value).parts[-2:]) if len(value) > 40 and "/" in value else value


def _varying(settings: Sequence[dict[str, Any]], members: Sequence[int], skip: str | None = None) -> list[str]:
    """Keys whose values differ among `members` (a key some lack counts as differing)."""
    keys = sorted({k for i in members for k in settings[i] if skip is None or not k.startswith(skip)})
    return [k for k in keys if len({json.dumps(settings[i].get(k, "\0"), sort_keys=True) for i in members}) > 1]


def run_names(configs: Sequence[dict[str, Any]], signatures: Sequence[str]) -> list[str]:
    """The name of each run (resolved configs, as plain data), in order; unique among these runs."""
    models = short_names([str(c["model"]) for c in configs])
    settings = [_settings(c) for c in configs]
    tasks: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(configs):
        tasks[json.dumps([c["task"], c["data"]], sort_keys=True)].append(i)
    parts = [[] for _ in configs]
    for members in tasks.values():
        varying = _varying(settings, members, skip=TASK_DATA)
        for i in members:
            c = configs[i]
            parts[i] = [models[str(c["model"])], task_label(c), languages(c), f"seed {c['train']['seed']}",
                        *(f"{k}={text(settings[i][k])}" for k in varying if k in settings[i])]
    names = [SEP.join(p) for p in parts]
    # Runs of different tasks with the same kind and languages (other data paths, say): add what differs.
    for members in _clashes(names):
        for i in members:
            names[i] = SEP.join([names[i], *(f"{k}={text(settings[i][k])}" for k in _varying(settings, members)
                                             if k in settings[i])])
    for members in _clashes(names):
        for i in members:
            names[i] = f"{names[i]}{SEP}{signatures[i]}"
    return names


def _clashes(names: list[str]) -> list[list[int]]:
    at: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        at[name].append(i)
    return [members for members in at.values() if len(members) > 1]


def folder_name(name: str, signature: str) -> str:
    """The name as a folder: `/` becomes `-` (a model or path part may hold one), · and → stay (UTF-8 names are
    fine for TensorBoard and Linux/macOS file systems); one longer than MAX_FOLDER_BYTES is cut and ends in the
    signature, so it stays unique."""
    folder = name.replace("/", "-").replace("\\", "-").replace("\0", "")
    folder = "_" + folder[1:] if folder.startswith(".") else folder
    if len(folder.encode()) <= MAX_FOLDER_BYTES:
        return folder
    tail = f"…{SEP}{signature}"
    while len((folder + tail).encode()) > MAX_FOLDER_BYTES:
        folder = folder[:-1]
    return folder.rstrip() + tail
