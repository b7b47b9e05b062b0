"""A fine-tuning grid: a base `FinetuneConfig` crossed with axes and explicit combinations -> runs.

    grid = load_grid("grid.yaml", ["base.train.epochs=1"])   # grid.runs: one Run per distinct config

The spec (YAML; every key below, `medtrain/configs/grid-demo.yaml` is an example):

    grid_dir: runs/grid-ner            # GRID_DIR: runs/<signature>/, jobs.json, slurm/ logs, results
    base: finetune-ner.yaml            # a fine-tuning config: a path relative to this file (or a packaged
                                       # recipe name), or the config itself as an inline mapping
    axes:                              # every combination of these values (a product) ...
      model: [models/mbert, runs/pretrain/export]
      train.lr: [2.0e-5, 5.0e-5]
      train.seed: [0, 1, 2]
    combos:                            # ... crossed with each of these explicit combinations
      - {data.train: data/ner/es/train, data.dev: data/ner/es/dev}
      - {data.train: {es: data/ner/es/train, ro: data/ner/ro/train}, data.dev: data/ner/es/dev}
    executor: slurm                    # or local: this machine, local_parallelism processes at a time
    local_parallelism: 1
    local_runs_per_process: 4          # runs one after another in each local process (start-up paid once)
    array_parallelism: 16              # array tasks running at once
    slurm: {partition: gpu, time_min: 120, cpus_per_task: 8, gpus_per_task: 1, mem_gb: 32,
            account: null, qos: null, constraint: null, signal_delay_s: 120, max_timeouts: 3,
            runs_per_task: 4,          # runs one after another in each array task (start-up paid once)
            extra: {exclude: node07}}  # extra: any other submitit SLURM parameter (sbatch option, `_` for `-`)
                                       # medtrain.cluster.SlurmResources; left out: cpus_per_task 1,
                                       # signal_delay_s 120, max_timeouts 3, runs_per_task 4 (one task on
                                       # one node; its runs one after another)

Axis and combination keys are dotted config keys (`train.lr`), as in `medtrain finetune CONFIG k=v`. Paths in
the base config and in values are relative to the current directory, as for `medtrain finetune`; they are made
absolute here, so jobs find them from any directory. Each run's config is built and validated now, so an
unknown key or a bad value is one error before anything is submitted.

A run's signature is a short hash of its resolved config without the keys that do not change what it computes
(output_dir, cache_dir, progress, tensorboard_dir), with paths absolute and languages sorted: two ways of writing
the same run get one signature and one folder, GRID_DIR/runs/<signature>/, and run once (dora's rule). People
see a run by its name (medtrain/grid/names.py: `clinical · ner-ro · ro→es+nl+ro · seed 1`), and TensorBoard
by its events folder of that name, GRID_DIR/tensorboard/<name>/ (medtrain/grid/tensorboard.py).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from medtrain.cluster.executor import check_extra
from medtrain.cluster.resources import FINETUNE, RUNS_PER_TASK, SlurmResources
from medtrain.config import apply_override, build_config, config_to_dict, parse_override, read_yaml, \
    resolve_config_path
from medtrain.errors import UserError
from medtrain.finetune import RESULTS, FinetuneConfig
from medtrain.grid.names import folder_name, run_names

SIGNATURE_LENGTH = 10
NOT_IN_SIGNATURE = ("output_dir", "cache_dir", "progress", "tensorboard_dir")
"""Where a run writes and whether it draws a progress bar: the same run either way."""
SET_BY_GRID = ("output_dir", "tensorboard_dir")
EVENTS_KEY = "tensorboard_dir"
EVENTS_FOLDER = "tensorboard"
"""GRID_DIR/tensorboard/<run name>: each run's TensorBoard events (its config's tensorboard_dir)."""


@dataclasses.dataclass
class GridSpec:
    grid_dir: Path
    base: str | dict[str, Any]
    axes: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    combos: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    executor: Literal["slurm", "local"] = "slurm"
    local_parallelism: int = 1
    """Local processes at a time; the CPU cores are shared out among them."""
    local_runs_per_process: int = RUNS_PER_TASK
    """Runs one after another in each local process (libraries imported once); 1: a fresh process per run.
    The default and why: medtrain.cluster.resources.RUNS_PER_TASK."""
    array_parallelism: int = 16
    slurm: SlurmResources = dataclasses.field(default_factory=SlurmResources)
    """What each array task (slurm.runs_per_task runs, one after another) asks for; fields left null take the
    fine-tuning defaults (FINETUNE)."""

    def __post_init__(self) -> None:
        if self.local_parallelism < 1 or self.array_parallelism < 1 or self.local_runs_per_process < 1:
            raise ValueError("local_parallelism, local_runs_per_process and array_parallelism must be >= 1")
        self.slurm = self.slurm.with_defaults(FINETUNE)


@dataclasses.dataclass(frozen=True)
class Run:
    signature: str
    params: dict[str, Any]
    """The axis and combination values that made this run (for tables)."""
    config: dict[str, Any]
    """The resolved FinetuneConfig as plain data, output_dir = GRID_DIR/runs/<signature>, tensorboard_dir =
    GRID_DIR/tensorboard/<name as a folder> (where FinetuneConfig has it)."""
    name: str
    """What people see it as (medtrain/grid/names.py), unique in the grid."""

    @property
    def run_dir(self) -> Path:
        return Path(self.config["output_dir"])

    @property
    def complete(self) -> bool:
        """finetune writes results.json last, atomically."""
        return (self.run_dir / RESULTS).is_file()


@dataclasses.dataclass(frozen=True)
class Grid:
    source: Path
    spec: GridSpec
    grid_dir: Path
    runs: list[Run]
    duplicates: int
    """Combinations that resolved to a run already in the grid."""


# ----------------------------------------------------------------------------- signatures


def canonical(cfg: FinetuneConfig) -> FinetuneConfig:
    """Paths absolute and mappings (languages) sorted: the same run however it was written."""

    def walk(value: Any) -> Any:
        if isinstance(value, Path):
            return Path(os.path.abspath(value))
        if isinstance(value, dict):
            return {key: walk(value[key]) for key in sorted(value)}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.replace(value, **{f.name: walk(getattr(value, f.name))
                                                 for f in dataclasses.fields(value) if f.init})
        return value

    return walk(cfg)


def signature(cfg: FinetuneConfig) -> str:
    """Short hash of what the run computes (see the module docstring)."""
    identity = {k: v for k, v in config_to_dict(canonical(cfg)).items() if k not in NOT_IN_SIGNATURE}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:SIGNATURE_LENGTH]


# ----------------------------------------------------------------------------- expansion


def expand(base: dict[str, Any], axes: dict[str, list[Any]],
           combos: Sequence[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(params, config data) for each combination x each point of the axes' product, in spec order."""
    keys = list(axes)
    for combo in combos or [{}]:
        for values in itertools.product(*(axes[k] for k in keys)):
            params = {**combo, **dict(zip(keys, values))}
            data = copy.deepcopy(base)
            for key, value in params.items():
                apply_override(data, key.split("."), copy.deepcopy(value))
            yield params, data


def _check_axes(spec: GridSpec, lines: dict[str, int], source: Path) -> None:
    for key, values in spec.axes.items():
        if not values:
            raise UserError(f"axes.{key}: needs at least one value", source, lines.get(f"axes.{key}"))
    for i, combo in enumerate(spec.combos):
        for key in combo:
            where = lines.get(f"combos.{i}.{key}")
            if key in spec.axes:
                raise UserError(f"combos.{i}.{key}: also an axis; give its values in one place", source, where)
            if key in SET_BY_GRID:
                raise UserError(f"combos.{i}.{key}: set by the grid ({_SET_TO[key]})", source, where)
    for key in SET_BY_GRID:
        if key in spec.axes:
            raise UserError(f"axes.{key}: set by the grid ({_SET_TO[key]})", source, lines.get(f"axes.{key}"))


_SET_TO = {"output_dir": "GRID_DIR/runs/<signature>", "tensorboard_dir": "GRID_DIR/tensorboard/<run name>"}


# ----------------------------------------------------------------------------- loading


def _split_overrides(overrides: Sequence[str], base_is_file: bool) -> tuple[list[tuple[list[str], Any]], ...]:
    """`base.k=v` goes to a base config read from a file; everything else to the grid spec."""
    grid, base = [], []
    for text in overrides:
        keys, value = parse_override(text)
        if base_is_file and keys[0] == "base" and len(keys) > 1:
            base.append((keys[1:], value))
        else:
            grid.append((keys, value))
    return grid, base


def _read_base(spec: GridSpec, source: Path, lines: dict[str, int]) -> tuple[dict[str, Any], Path, dict[str, int]]:
    """The base config as data, the file holding it and its line index (inline: the grid's, under base.)."""
    if isinstance(spec.base, dict):
        return copy.deepcopy(spec.base), source, {k[5:]: v for k, v in lines.items() if k.startswith("base.")}
    beside = source.parent / spec.base
    path = beside if beside.is_file() else resolve_config_path(spec.base)
    data, base_lines = read_yaml(path)
    return data, path, base_lines


def load_grid(path: str | Path, overrides: Sequence[str] = ()) -> Grid:
    """Read and validate a grid spec (a path or a packaged name) and resolve every run's config."""
    source = resolve_config_path(path)
    data, lines = read_yaml(source)
    base_is_file = not isinstance(data.get("base"), dict)
    grid_overrides, base_overrides = _split_overrides(overrides, base_is_file)
    for keys, value in grid_overrides:
        apply_override(data, keys, value)
        lines.pop(".".join(keys), None)  # from the command line: no line in the file
    spec = build_config(GridSpec, data, source, lines)
    _check_axes(spec, lines, source)
    if spec.slurm.nodes != 1 or spec.slurm.gpus_per_node or spec.slurm.tasks_per_node is not None:
        raise UserError("slurm: a fine-tuning run is one task on one node; give its GPUs as gpus_per_task", source,
                        lines.get("slurm"))
    check_extra(spec.slurm.extra, source, lines)
    base, base_source, base_lines = _read_base(spec, source, lines)
    for keys, value in base_overrides:
        apply_override(base, keys, value)
        base_lines.pop(".".join(keys), None)
    grid_dir = Path(os.path.abspath(spec.grid_dir))
    base["output_dir"] = str(grid_dir / "runs")  # each run's own folder is set once its signature is known
    where = _Origins(source, lines, base_source, base_lines, spec)
    runs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # signature -> (params, config)
    duplicates = 0
    for i, (params, run_data) in enumerate(expand(base, spec.axes, spec.combos)):
        cfg = canonical(where.build(run_data, params, i))
        sig = signature(cfg)
        if sig in runs:
            duplicates += 1
            continue
        cfg = dataclasses.replace(cfg, output_dir=grid_dir / "runs" / sig, progress=False,
                                  cache_dir=cfg.cache_dir or grid_dir / "cache")
        runs[sig] = (params, config_to_dict(cfg))
    return Grid(source, spec, grid_dir, _named(runs, grid_dir), duplicates)


def _named(runs: dict[str, tuple[dict[str, Any], dict[str, Any]]], grid_dir: Path) -> list[Run]:
    """Names depend on the grid's other runs (what varies among a task's runs), so they come once all are known;
    each run's events go to the folder of its name."""
    names = run_names([config for _, config in runs.values()], list(runs))
    named = []
    for (sig, (params, config)), name in zip(runs.items(), names):
        config = {**config, EVENTS_KEY: str(grid_dir / EVENTS_FOLDER / folder_name(name, sig))}
        named.append(Run(sig, params, config, name))
    return named


class _Origins:
    """Builds one run's FinetuneConfig; an error points at the line its key came from: an axis, a
    combination, or the base config (a file of its own, or inline in the grid)."""

    def __init__(self, source: Path, lines: dict[str, int], base_source: Path, base_lines: dict[str, int],
                 spec: GridSpec):
        self.source, self.lines = source, lines
        self.base_source, self.base_lines = base_source, base_lines
        self.spec = spec

    def build(self, data: dict[str, Any], params: dict[str, Any], index: int) -> FinetuneConfig:
        try:
            return build_config(FinetuneConfig, data)
        except UserError as exc:
            raise self._locate(exc.message, params, index) from None

    def _locate(self, message: str, params: dict[str, Any], index: int) -> UserError:
        key = _key_of(message, list(params))
        if key is not None:
            combo = index // max(1, _product_size(self.spec.axes))
            origin = f"axes.{key}" if key in self.spec.axes else f"combos.{combo}.{key}"
            return UserError(f"{origin}: {message}", self.source, self.lines.get(origin))
        base_key = _key_of(message, list(self.base_lines))
        if base_key is not None:
            inline = self.base_source == self.source
            return UserError(f"base: {message}" if inline else message, self.base_source,
                             self.base_lines.get(base_key))
        shown = ", ".join(f"{k}={short(v)}" for k, v in params.items())
        return UserError(f"{message} (in the run with {shown})" if shown else message, self.source)


def _product_size(axes: dict[str, list[Any]]) -> int:
    size = 1
    for values in axes.values():
        size *= len(values)
    return size


def _key_of(message: str, keys: list[str]) -> str | None:
    """The longest of `keys` that the message is about (`key: ...`, `key.sub: ...` or `key value ...`)."""
    found = [k for k in keys if k and any(message.startswith(k + end) for end in (":", ".", " "))]
    return max(found, key=len) if found else None


def short(value: Any) -> str:
    """A value for one-line messages and tables: long paths keep their last two parts."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {short(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if len(text) > 40 and "/" in text:
        text = "…/" + "/".join(Path(text).parts[-2:])
    return text
