"""`medtrain study` end to end on the sample data, for real, at the size `make demo` runs (less the biomedical
variant and the cross-lingual test sets; the session's `demo` fixture runs it): prepare, a general-domain
baseline pretrained on 2 DeepSpeed CPU ranks, a clinical variant continuing from it, a fine-tuning grid over
both x screening and two NER tasks x 3 seeds, analysis and report. The check the study exists for: the clinical variant beats the un-adapted baseline on
screening and on NER by more than the confidence interval. Then: a second run redoes nothing, and a lost run is
the only thing redone. On SLURM: the pretraining jobs in order and the fine-tuning array waiting for them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from medtrain.cli import run as medtrain
from medtrain.config import read_yaml, resolve_config_path
from medtrain.grid.records import load_jobs

from _launch import job_info

if TYPE_CHECKING:  # the session's demo study (tests/integration/conftest.py)
    from conftest import Demo

pytestmark = pytest.mark.integration

NAMED = Path("demo/study")  # the study's folder as its documented command names it, relative to the demo root


def run_study(config: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medtrain.cli", "study", str(config)], capture_output=True,
                          text=True, timeout=timeout)


def study_yaml(path: Path, data: Path, out: Path, **changes: Any) -> Path:
    """The packaged study-demo without the biomedical variant and with in-language test sets only; the same
    corpora, pretraining and fine-tuning, so the same baseline and clinical models and in-language scores."""
    study, _ = read_yaml(resolve_config_path("study-demo"))
    study.update(data_dir=str(data), output_dir=str(out))
    study["variants"] = {"clinical": study["variants"]["clinical"]}
    for task in study["tasks"]:
        task["test_languages"] = task["train_languages"]
    study.update(changes)
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def difference(out: Path, task: str, variant: str = "clinical") -> dict[str, Any]:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    [d] = [d for d in report["tasks"][task]["differences"]
           if d["variant"] == variant and d["against"] == "baseline" and d["in_language"]]
    return d


TASKS = ("screening-nl", "ner-ro", "ner-es")


def claim_holds(out: Path, task: str) -> None:
    """The README's claim for one task: clinical - baseline, in-language, beyond its Holm-adjusted interval."""
    d = difference(out, task)
    assert d["lo_adjusted"] > 0, f"{out.name} {task}: clinical - baseline = {d['delta']:+.3f}, adjusted 95% " \
                                 f"interval [{d['lo_adjusted']:+.3f}, {d['hi_adjusted']:+.3f}]"
    assert d["lo_adjusted"] <= d["lo"] <= d["delta"] <= d["hi"] <= d["hi_adjusted"]


@pytest.mark.parametrize("task", TASKS)
def test_clinical_variant_beats_the_baseline_beyond_the_interval(demo: Demo, task: str) -> None:
    """Screening: one epoch at a low rate separates patients only for a model whose pretraining already
    taught it the clinical words. NER: half the entity terms never occur in NER training, and most test
    mentions name one of them (sample.held_out_terms, TEST_HELD_OUT_RATE); only the clinical corpus taught them."""
    claim_holds(demo.out, task)


def test_the_claims_hold_under_another_floating_point_order(demo: Demo) -> None:
    """Another CPU runs other kernels: other rounding, which 1,000 pretraining steps at a high rate amplify. The
    same study with the same data, seeds and masks, pretrained under ZeRO-2 (gradients reduce-scattered in
    buckets, each rank stepping its own partition, then gathered) instead of ZeRO-0's all-reduce: other rounding
    from the first step on, so other weights and other scores, and every claim still holds. (Two threads per
    pretraining rank would be the closer analogue, but 4 spinning threads on 2 cores ran the baseline's 400 steps
    in ~3 minutes, not 29 s; 2 threads per fine-tuning run, one run at a time, made this test 4x longer in the
    loaded suite.) The data and their shards are the fixture's: prepare finds them current."""
    perturbed = demo.out.with_name("perturbed")
    shutil.copytree(demo.out / "shards", perturbed / "shards")
    command = [*demo.study_command, f"output_dir={NAMED.with_name(perturbed.name)}",
               "pretrain.overrides.deepspeed=ds_configs/zero2.json"]
    result = demo.run(command, timeout=demo.study_timeout_s)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "checking" in result.stdout
    assert "zero2" in (perturbed / "configs" / "pretrain-clinical.yaml").read_text(encoding="utf-8")
    for name in ("baseline", "clinical"):  # the perturbation is real: other weights from the same data and seed
        weights = [(out / "pretrain" / name / "export" / "model.safetensors").read_bytes()
                   for out in (demo.out, perturbed)]
        assert weights[0] != weights[1], name
    deltas = [{task: difference(out, task)["delta"] for task in TASKS} for out in (demo.out, perturbed)]
    assert deltas[0] != deltas[1]
    for task in TASKS:
        claim_holds(perturbed, task)


def test_report_has_table_winners_differences_matrix_and_analysis(demo: Demo) -> None:
    out, printed = demo.out, demo.printed
    report = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Results", "## Winner per task", "## Pairwise differences", "## Cross-lingual matrix",
                    "## Label spaces", "## Per-type scores", "## Why: the gains beside the data behind them",
                    "## All fine-tuning runs"):
        assert heading in report
    # the three languages' type sets, mapped to MoNERo's: every NER task's label space and per-type table
    for task in ("ner-ro", "ner-es"):
        assert f"### {task} (exact-offset entity F1 per type)" in report
    assert all(t in report.split("## Label spaces")[1] for t in ("NORMALIZABLES", "Medicatie", "DISO"))
    row = next(line for line in report.splitlines() if line.startswith("| screening-nl | patient AUROC | nl → nl |"))
    assert re.fullmatch(r"\| screening-nl \| patient AUROC \| nl → nl( \| (\*\*)?\d\.\d{3} ± \d\.\d{3}(\*\*)?){2} \|",
                        row), row
    assert "| ner-ro | exact-offset entity F1 | ro → ro |" in report  # every table names its metric
    assert "**" in row  # the best model is marked
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (out / image).is_file(), image
    assert f"report: {NAMED / 'report.md'}" in printed
    assert f"tensorboard --logdir {NAMED}" in printed
    assert "| task | metric | train → test | baseline | clinical |" in printed
    # the exports are Hugging Face folders that continue from one another
    clinical = yaml.safe_load((out / "pretrain" / "clinical" / "config.yaml").read_text(encoding="utf-8"))
    assert clinical["model"]["init"] == str(NAMED / "pretrain" / "baseline" / "export")


def test_decontamination_kept_out_exactly_the_planted_evaluation_text(demo: Demo) -> None:
    """The sample's clinical corpora hold copies of test documents and notes of test patients
    (contamination.json); the study excluded every task's dev and test sets, so exactly those went, and the
    report says what each model's corpora lost and what the raw corpora held of each test set."""
    from medtrain.data.shards import read_manifest

    planted = json.loads((demo.root / "demo" / "data" / "contamination.json").read_text(encoding="utf-8"))
    exclusion = read_manifest(demo.out / "shards").exclusion
    excluded = [s["path"] for s in exclusion["sources"]]

    def kept_out(record: dict[str, str]) -> bool:
        """Whether the study excluded the test set the record was planted from (it excludes what its tasks
        read: here each task's own language only). The ro copies come from the split's test part."""
        source = record["source"]
        test_set = "ner/ro/split/test.conllu" if source == "ner/ro/monero.conllu" else \
            str(Path(source).parent) if source.startswith("ner/") else source
        return any(path.endswith(test_set) for path in excluded)

    dropped = {corpus: sum(d["documents"] for d in sources.values())
               for corpus, sources in exclusion["dropped"].items()}
    assert dropped == {corpus: sum(map(kept_out, planted.get(corpus, []))) for corpus in dropped}
    assert all(dropped[corpus] > 0 for corpus in planted)
    assert exclusion["rule"]["by"] == ["patient_id"]
    report = (demo.out / "report.md").read_text(encoding="utf-8")
    assert "Decontamination was off" not in report
    assert "What decontamination kept out" in report
    clinical = sum(dropped[c] for c in planted if exclusion["dropped"][c])  # the clinical variant reads these
    row = next(line for line in report.splitlines() if line.startswith("| all evaluation sources |"))
    assert f"{clinical:,} / " in row, row


def test_running_again_redoes_nothing_and_a_lost_run_is_the_only_one_redone(demo: Demo) -> None:
    out = demo.out
    results = sorted((out / "grid" / "runs").glob("*/results.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    again = demo.run(demo.study_command, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[1/5] prepare: " in again.stdout and "is complete" in again.stdout
    for name in ("baseline", "clinical"):  # both exports found complete, no pretraining started
        assert f"[2/5] pretrain {name}: {NAMED / 'pretrain' / name / 'export'} is complete" in again.stdout
    assert "2 rank(s)" not in again.stdout
    assert "0 to launch" in again.stdout and "[5/5] report: " in again.stdout
    assert {p: p.stat().st_mtime_ns for p in results} == stamps

    lost = results[0].parent
    for file in lost.rglob("*"):
        if file.is_file():
            file.unlink()
    third = demo.run(demo.study_command, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "1 to launch" in third.stdout
    assert (lost / "results.json").is_file()
    assert {p: p.stat().st_mtime_ns for p in results if p.parent != lost} == \
           {p: s for p, s in stamps.items() if p.parent != lost}


def test_on_slurm_the_finetuning_array_waits_for_the_pretraining_jobs(
        slurm_cluster, sample_data: Path, tmp_path: Path) -> None:
    """Submission only: the variant waits for the baseline (afterok), a staged variant for the one it continues
    from, the array for all; then cancel. The baseline may not begin for an hour, so every job stays pending
    while the test looks."""
    out = tmp_path / "out"
    study, _ = read_yaml(resolve_config_path("study-demo"))
    staged = {"from": "clinical", "corpora": study["variants"]["biomedical"]["corpora"]}
    config = study_yaml(tmp_path / "study.yaml", sample_data, out, executor="slurm", slurm={
        "pretrain": {"partition": slurm_cluster.partition, "tasks_per_node": 1, "time_min": 5,
                     "extra": {"additional_parameters": {"begin": "now+1hour"}}},
        "finetune": {"partition": slurm_cluster.partition, "time_min": 5}},
        variants={"clinical": study["variants"]["clinical"], "clinical-biomedical": staged})
    jobs: dict[str, str] = {}
    try:
        assert medtrain(["study", str(config)]) == 0
        jobs = json.loads((out / "jobs.json").read_text(encoding="utf-8"))
        assert set(jobs) == {"baseline", "clinical", "clinical-biomedical"}
        assert f"afterok:{jobs['baseline']}" in job_info(jobs["clinical"])["Dependency"]
        assert f"afterok:{jobs['clinical']}" in job_info(jobs["clinical-biomedical"])["Dependency"]
        [array] = {r["job_id"].split("_")[0] for r in load_jobs(out / "grid").values()}
        dependency = job_info(array)["Dependency"]
        assert all(job in dependency for job in jobs.values()), dependency
        again = run_study(config, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout.count("is still pending or running") == 3  # nothing submitted twice
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs.values()], check=False, timeout=60)
        assert medtrain(["grid", "cancel", str(out / "grid.yaml")]) == 0


def test_a_small_study_runs_through_slurm_to_its_report(slurm_cluster, sample_data: Path, tmp_path: Path) -> None:
    """executor: slurm for real: submit (pretraining jobs, then the fine-tuning array behind them), wait until the
    queue is empty, run again: the analysis and the report, with every run's result from the SLURM jobs."""
    out = tmp_path / "out"
    study, _ = read_yaml(resolve_config_path("study-demo"))
    [ner_es] = [dict(task, test_languages=["es"]) for task in study["tasks"] if task["name"] == "ner-es"]
    config = study_yaml(
        tmp_path / "study.yaml", sample_data, out, executor="slurm", seeds=[0, 1], tasks=[ner_es],
        pretrain={**study["pretrain"], "overrides": {**study["pretrain"]["overrides"], "train.warmup_steps": 5}},
        baseline={"pretrain": {**study["baseline"]["pretrain"], "overrides": {"train.max_steps": 20}}},
        variants={"clinical": {**study["variants"]["clinical"], "overrides": {"train.max_steps": 20}}},
        analysis={"max_documents": 20, "perplexity_sequences": 4}, compare={"bootstrap": 100},
        slurm={"pretrain": {"partition": slurm_cluster.partition, "tasks_per_node": 2, "cpus_per_task": 1,
                            "time_min": 10},
               "finetune": {"partition": slurm_cluster.partition, "time_min": 10}})
    first = run_study(config, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = json.loads((out / "jobs.json").read_text(encoding="utf-8"))
    assert set(jobs) == {"baseline", "clinical"} and not (out / "report.md").exists()
    try:
        deadline = time.monotonic() + 900
        while subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=60, check=True).stdout.strip():
            assert time.monotonic() < deadline, "the study's jobs did not end within 900 s"
            time.sleep(2)
    finally:
        subprocess.run(["scancel", *jobs.values()], check=False, timeout=60)
        medtrain(["grid", "cancel", str(out / "grid.yaml")])
    for name in jobs:
        assert job_info(jobs[name])["JobState"] == "COMPLETED", name
    second = run_study(config, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in second.stdout
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert {d["variant"] for d in report["tasks"]["ner-es"]["differences"]} == {"clinical"}
    assert len(list((out / "grid" / "runs").glob("*/results.json"))) == 4  # 2 models x 2 seeds, all from SLURM
