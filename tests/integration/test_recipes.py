"""Every packaged recipe's documented commands (the `#   medtrain ...` / `#   python ...` lines of its header
comment) work after `make demo`: each is run as written from the session's demo root (tests/integration/
conftest.py), adding only tiny overrides (few steps and epochs, small bootstraps, run folders of their own).
study-demo's commands are what the `demo` fixture itself runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from medtrain.config import read_yaml, resolve_config_path
from medtrain.grid.records import load_jobs

from _launch import job_info

if TYPE_CHECKING:
    from conftest import Demo

pytestmark = pytest.mark.integration

GRID_TINY = ["base.train.epochs=1", "base.eval.bootstrap=20"]
"""Overrides for grid-demo's commands: one epoch per run, a small bootstrap."""
HOLD = "{additional_parameters: {begin: now+1hour}}"
"""sbatch --begin: submitted jobs stay pending while the test looks, and cost the machine nothing."""


def test_demo_pretrain(demo: Demo) -> None:
    [command] = demo.documented("demo-pretrain")
    demo.check([*command, "train.max_steps=2", "train.warmup_steps=1", "train.eval_batches=2"])
    output_dir = demo.root / read_yaml(resolve_config_path("demo-pretrain"))[0]["output_dir"]
    assert (output_dir / "export" / "model.safetensors").is_file()


@pytest.mark.parametrize("recipe", ["finetune-ner", "finetune-screening"])
def test_finetune_recipe_on_the_demo_model(demo: Demo, recipe: str) -> None:
    [command] = demo.documented(recipe)
    demo.check([*command, "train.epochs=1", "eval.bootstrap=20"])
    packaged, _ = read_yaml(resolve_config_path(recipe))
    results = json.loads((demo.root / packaged["output_dir"] / "results.json").read_text(encoding="utf-8"))
    assert sorted(results["test"]) == sorted(packaged["data"]["test"])  # every test language scored
    assert results["model"] == "demo/study/pretrain/clinical/export"


def release_layouts(data: Path, into: Path) -> None:
    """The sample NER laid out as the real releases unpack (the ner-pharmaconer and ner-simonero headers):
    Spanish BRAT as PharmaCoNER's Zenodo zip, the Romanian CoNLL-U split as UD_Romanian-SiMoNERo's files."""
    for split in ("train", "dev", "test"):
        brat = into / "pharmaconer" / f"{split}-set_1.1" / split / "subtrack1"
        brat.parent.mkdir(parents=True, exist_ok=True)
        brat.symlink_to((data / "ner" / "es" / split).resolve())
        conllu = into / "UD_Romanian-SiMoNERo" / f"ro_simonero-ud-{split}.conllu"
        conllu.parent.mkdir(parents=True, exist_ok=True)
        conllu.symlink_to((data / "ner" / "ro" / "split" / f"{split}.conllu").resolve())


@pytest.mark.parametrize("recipe, lang", [("ner-pharmaconer", "es"), ("ner-simonero", "ro")])
def test_real_release_recipes_on_their_layouts(demo: Demo, recipe: str, lang: str) -> None:
    """Run as documented from a folder holding data/ (the release as unpacked, here the sample in its layout) and
    models/ (the demo's clinical model standing in for mBERT)."""
    root = demo.root / f"release-{recipe}"
    release_layouts(demo.root / "demo" / "data", root / "data")
    (root / "models").mkdir()
    (root / "models" / "bert-base-multilingual-cased").symlink_to(demo.out / "pretrain" / "clinical" / "export")
    [command] = demo.documented(recipe)
    type(demo)(root, [], "").check([*command, "train.epochs=1", "train.max_length=64", "eval.bootstrap=20"])
    packaged, _ = read_yaml(resolve_config_path(recipe))
    results = json.loads((root / packaged["output_dir"] / "results.json").read_text(encoding="utf-8"))
    assert list(results["test"]) == [lang] and results["test"][lang]["f1"]["value"] is not None
    predictions = root / packaged["output_dir"] / "predictions" / lang
    assert any(predictions.glob("*.ann"))
    if recipe == "ner-simonero":  # the CoNLL-U copy for the user's own scorer
        assert (predictions / "ro_simonero-ud-test.conllu").is_file()
    else:  # the sample's slipped training annotations were repaired or skipped, and counted
        reading = results["reading"]["train"][lang]
        assert reading["repaired"] > 0 and reading["skipped_annotations"] > 0


def test_grid_demo_here_then_status_and_results(demo: Demo) -> None:
    submit, _, status, results = demo.documented("grid-demo")
    assert "6 runs: 6 completed" in demo.check([*submit, *GRID_TINY])
    assert "6 runs: 6 completed" in demo.check([*status, *GRID_TINY])
    printed = demo.check(results)
    assert "6 finished runs" in printed
    assert (demo.root / "demo" / "runs" / "grid" / "results.md").is_file()


def test_grid_demo_as_a_slurm_array(slurm_cluster, demo: Demo) -> None:
    """Submitted through the launcher, pending (held by --begin), then cancelled."""
    _, launcher, status, _ = demo.documented("grid-demo")
    overrides = [f"slurm.partition={slurm_cluster.partition}", "grid_dir=runs/grid-slurm", f"slurm.extra={HOLD}",
                 *GRID_TINY]
    try:
        demo.check([*launcher, *overrides])
        [array] = {r["job_id"].split("_")[0] for r in load_jobs(demo.root / "runs" / "grid-slurm").values()}
        assert "6 runs: 6 pending" in demo.check([*status, *overrides])
        assert job_info(array)["JobState"] == "PENDING"
    finally:
        demo.check(["medtrain", "grid", "cancel", "grid-demo", *overrides])
    assert "6 pending" not in demo.check([*status, *overrides])


def test_study_cluster_submits_its_jobs(slurm_cluster, demo: Demo) -> None:
    """Submission only, from an edited copy as its comment says (paths and slurm sections as overrides): each
    variant's replicate is one pretraining job, a staged one after its parent's (afterok), the fine-tuning array
    waits for all of them; then everything is cancelled."""
    [command] = demo.documented("study-cluster")
    shutil.copy(resolve_config_path("study-cluster"), demo.root / command[-1])
    packaged, _ = read_yaml(resolve_config_path("study-cluster"))
    partition = slurm_cluster.partition
    release_layouts(demo.root / "demo" / "data", demo.root / "demo" / "data")  # its NER paths: the releases'
    overrides = [
        "data_dir=demo/data", "output_dir=runs/study-cluster", "baseline.model=demo/study/pretrain/baseline/export",
        *(f"prepare.corpora.{i}.path=corpora/{c['name']}.jsonl" for i, c in enumerate(packaged["prepare"]["corpora"])),
        f"slurm.pretrain={{partition: {partition}, tasks_per_node: 1, time_min: 5, extra: {HOLD}}}",
        f"slurm.finetune={{partition: {partition}, time_min: 5}}"]
    out = demo.root / "runs" / "study-cluster"
    jobs: dict[str, str] = {}
    try:
        demo.check([*command, *overrides])
        jobs = json.loads((out / "jobs.json").read_text(encoding="utf-8"))
        seeds = packaged["pretrain_seeds"]
        assert set(jobs) == {f"{v}-seed{s}" for v in packaged["variants"] for s in seeds}  # a job per replicate
        for name, variant in packaged["variants"].items():  # a staged variant's replicate waits for its parent's
            if "from" in variant:
                for s in seeds:
                    assert f"afterok:{jobs[variant['from'] + f'-seed{s}']}" in \
                        job_info(jobs[f"{name}-seed{s}"])["Dependency"]
        [array] = {r["job_id"].split("_")[0] for r in load_jobs(out / "grid").values()}
        dependency = job_info(array)["Dependency"]
        assert all(job in dependency for job in jobs.values()), dependency
        grid = yaml.safe_load((out / "grid.yaml").read_text(encoding="utf-8"))
        assert len(grid["axes"]["model"]) == 1 + len(jobs)  # the baseline and each replicate
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs.values()], check=False, timeout=60)
        if (out / "grid.yaml").is_file():
            demo.check(["medtrain", "grid", "cancel", "runs/study-cluster/grid.yaml"])
