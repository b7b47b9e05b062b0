"""The study's own logic: config checks, the grid it builds, and the paired multi-bootstrap difference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medtrain import metrics
from medtrain.config import config_to_dict, load_config
from medtrain.errors import UserError
from medtrain.cluster.resources import SlurmResources
from medtrain.study.compare import Cell, RunScores, difference
from medtrain.study.config import BASELINE, CompareConfig, StudyConfig
from medtrain.study.plan import Study
from medtrain.study.stages import grid_spec


def scores(rows: list[tuple[int, int, int]], units: tuple[str, ...] | None = None) -> RunScores:
    """NER-style per-unit (tp, predicted, gold) counts."""
    units = units or tuple(f"doc{i}" for i in range(len(rows)))
    return RunScores(units, np.array(rows, dtype=float), metrics.micro_metric("f1"))


def noisy_cell(rng: np.random.Generator, hit_rate: float, seeds: int = 3, units: int = 60) -> Cell:
    """Seeds of a model finding each of 5 gold entities per document with probability hit_rate."""
    return Cell([[scores([(int(tp), int(tp), 5) for tp in rng.binomial(5, hit_rate, units)]) for _ in range(seeds)]])


def test_clearly_better_variant_has_an_interval_above_zero() -> None:
    rng = np.random.default_rng(0)
    base, better = noisy_cell(rng, 0.4), noisy_cell(rng, 0.8)
    d = difference(base, better, CompareConfig(bootstrap=300))
    assert d.delta == pytest.approx(better.mean() - base.mean())
    lo, hi = d.interval(0.05)
    assert 0 < lo < d.delta < hi


def test_equal_models_have_an_interval_around_zero() -> None:
    rng = np.random.default_rng(1)
    d = difference(noisy_cell(rng, 0.6), noisy_cell(rng, 0.6), CompareConfig(bootstrap=300))
    lo, hi = d.interval(0.05)
    assert lo < 0 < hi


def test_seed_variance_widens_the_interval() -> None:
    """One model gives the same scores with every seed, the other does not: its interval must be wider."""
    rng = np.random.default_rng(2)
    base = noisy_cell(rng, 0.5)
    steady = Cell([[scores([(3, 3, 5)] * 60)] * 3])
    erratic = Cell([[scores([(1, 1, 5)] * 60), scores([(3, 3, 5)] * 60), scores([(5, 5, 5)] * 60)]])
    cfg = CompareConfig(bootstrap=300)
    narrow, wide = difference(base, steady, cfg), difference(base, erratic, cfg)
    (nlo, nhi), (wlo, whi) = narrow.interval(0.05), wide.interval(0.05)
    assert whi - wlo > 2 * (nhi - nlo)


def test_pairing_removes_shared_test_set_difficulty() -> None:
    """Both models see the same hard and easy documents; the variant finds one more entity in each. Paired
    resampling keeps the difference positive although the scores themselves vary a lot between documents."""
    rng = np.random.default_rng(3)
    gold = rng.integers(2, 20, 80)
    base_rows = [(int(g // 3), int(g // 3), int(g)) for g in gold]
    var_rows = [(tp + 1, p + 1, g) for tp, p, g in base_rows]
    d = difference(Cell([[scores(base_rows)] * 2]), Cell([[scores(var_rows)] * 2]), CompareConfig(bootstrap=300))
    assert d.interval(0.05)[0] > 0


def test_different_test_units_are_refused() -> None:
    a = Cell([[scores([(1, 1, 1)], ("a",))] * 2])
    b = Cell([[scores([(1, 1, 1)], ("b",))] * 2])
    with pytest.raises(UserError, match="different documents or patients"):
        difference(a, b, CompareConfig(bootstrap=10))


def study_config(tmp_path: Path, sample_dir: Path, *overrides: str) -> StudyConfig:
    return load_config(StudyConfig, "study-demo", [f"data_dir={sample_dir}", f"output_dir={tmp_path / 'study'}",
                                                   *overrides])


@pytest.fixture()
def sample_dir(tmp_path: Path) -> Path:
    """Setting a study up reads no data (the stages do), so an empty folder will do."""
    return tmp_path / "data"


def test_grid_has_every_model_task_language_and_seed(tmp_path: Path, sample_dir: Path) -> None:
    study = Study(study_config(tmp_path, sample_dir))
    spec = grid_spec(study, after=["41", "42"])
    assert spec["axes"]["model"] == [str(p) for p in study.models.values()]
    assert spec["axes"]["train.seed"] == study.cfg.seeds
    assert len(spec["combos"]) == sum(len(t.train_languages) for t in study.cfg.tasks)
    ner = next(c for c in spec["combos"] if c["task"] == "ner")
    assert set(ner["data"]["test"]) == {"ro", "es", "nl"}
    assert spec["slurm"]["extra"]["dependency"] == "afterok:41:42"
    assert "model" not in ner and "output_dir" not in ner  # set per run by the grid


def test_variants_continue_from_the_baseline_export(tmp_path: Path, sample_dir: Path) -> None:
    study = Study(study_config(tmp_path, sample_dir))
    clinical = study.pretrain["clinical"]
    assert clinical.model.init == study.models[BASELINE] and not clinical.model.config
    assert clinical.data.weights["clinical_es"] == 1.0 and clinical.data.weights["general_es"] == 0.0
    assert study.pretrain[BASELINE].model.config["hidden_size"] == 128


@pytest.mark.parametrize("override, message", [
    ("variants.clinical.corpora={clinical_xx: 1.0}", "not in prepare.corpora"),
    ("seeds=[0]", "at least 2 distinct seeds"),
    ("tasks.1.metric=auroc", "NER is compared on exact-offset entity f1"),
    ('tasks.1.path={ro: "ner/ro/{split}", es: "ner/es/{split}"}', "task ner-ro: path has no entry for nl"),
    ('tasks.1.path={ro: {path: ner/ro/train}, es: "ner/es/{split}", nl: "ner/nl/{split}"}',
     "task ner-ro: path.ro must contain {split}"),
    ('tasks.1.path={ro: {path: "ner/ro/{split}", colums: {tag: 2}}, es: "e/{split}", nl: "n/{split}"}',
     "path.ro.colums: unknown key; did you mean columns"),
    ("tasks.0.labels={keep: [CHEM]}", "labels \\(entity label spaces\\) are for NER tasks only"),
])
def test_bad_study_configs_are_user_errors(tmp_path: Path, sample_dir: Path, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        Study(study_config(tmp_path, sample_dir, override))


RO_COLUMNS = '{path: "ner/ro/{split}.conll", format: conll, columns: {token: 0, tag: 2}, short_lines: skip}'


def test_a_task_path_per_language_and_its_labels_reach_every_run(tmp_path: Path, sample_dir: Path) -> None:
    from medtrain.config import build_config
    from medtrain.finetune.config import FinetuneConfig

    study = Study(study_config(tmp_path, sample_dir,
                               f'tasks.1.path={{ro: {RO_COLUMNS}, es: "ner/es/{{split}}", nl: "ner/nl/{{split}}"}}',
                               "tasks.1.labels={map: {es: {PROTEINAS: CHEM}}, keep: [CHEM, DISO]}"))
    spec = grid_spec(study, after=[])
    ner_ro = next(c for c in spec["combos"] if c["task"] == "ner" and "ro" in c["data"]["train"])
    assert ner_ro["data"]["train"]["ro"] == {"path": str(sample_dir / "ner/ro/train.conll"), "format": "conll",
                                             "columns": {"token": 0, "tag": 2}, "short_lines": "skip"}
    assert ner_ro["data"]["test"]["es"] == str(sample_dir / "ner/es/test")
    assert ner_ro["labels"] == {"map": {"es": {"PROTEINAS": "CHEM"}}, "keep": ["CHEM", "DISO"], "strict": False}
    ner_es = next(c for c in spec["combos"] if c["task"] == "ner" and "es" in c["data"]["train"])
    assert ner_es["labels"] == config_to_dict(study.cfg.tasks[2].labels)  # each task its own
    cfg = build_config(FinetuneConfig, {**ner_ro, "output_dir": str(tmp_path / "r"), "model": str(tmp_path / "m")})
    ro = cfg.data.source("test", "ro")
    assert ro.format == "conll" and (ro.columns.tag, ro.columns.short_lines) == (2, "skip")
    assert study.split(study.cfg.tasks[1], "ro", "dev") == sample_dir / "ner/ro/dev.conll"
    assert study.reading(study.cfg.tasks[1], "ro", "train").format == "conll"


def test_slurm_sections_keep_the_pretrain_keys_and_share_one_resources_type(tmp_path: Path) -> None:
    """slurm.pretrain takes the keys it always took (PretrainSlurm's), now as the one SlurmResources type."""
    cfg = load_config(StudyConfig, "study-cluster", [f"output_dir={tmp_path}", f"data_dir={tmp_path}",
                                                     "slurm.pretrain.tasks_per_node=2", "slurm.pretrain.qos=long",
                                                     "slurm.pretrain.extra={exclude: node07}"])
    assert isinstance(cfg.slurm.pretrain, SlurmResources) and isinstance(cfg.slurm.finetune, SlurmResources)
    pretrain = cfg.slurm.pretrain
    assert (pretrain.nodes, pretrain.gpus_per_node, pretrain.tasks_per_node, pretrain.partition, pretrain.time_min,
            pretrain.cpus_per_task, pretrain.mem_gb, pretrain.qos, pretrain.extra) == \
           (2, 4, 2, "gpu", 1440, 8, 200, "long", {"exclude": "node07"})
    assert cfg.slurm.finetune.gpus_per_task == 1
    with pytest.raises(UserError, match="did you mean gpus_per_node"):
        load_config(StudyConfig, "study-cluster", [f"output_dir={tmp_path}", f"data_dir={tmp_path}",
                                                   "slurm.pretrain.gpus_per_nodes=2"])


def test_study_config_and_analysis_config_import_no_torch() -> None:
    """A config is checked in a second: the modules that only describe must not pull in torch."""
    code = ("import sys, medtrain.study.config, medtrain.study.analysis, medtrain.study.compare; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


STAGED = "variants.staged={from: clinical, corpora: {clinical_nl: 1.0}}"


@pytest.mark.parametrize("overrides, message", [
    (["variants.staged={from: clinicl, corpora: {clinical_nl: 1.0}}"],
     "variants.staged.from: unknown model 'clinicl'"),
    ([STAGED, "variants.clinical.from=staged"], "a cycle"),
    (["compare.pairs=[[clinical, biomedicl]]"], "compare.pairs.0: unknown model 'biomedicl'"),
    (["variants.clinical.temperature=0"], "temperature must be > 0"),
    (["variants.clinical.sampling=temprature"], "must be one of"),
    (["pretrain_seeds=[1, 1]"], "pretrain_seeds: distinct seeds"),
])
def test_bad_study_design_is_one_line_naming_file_and_key_and_nothing_is_written(
        tmp_path: Path, sample_dir: Path, overrides: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    from medtrain.cli import run as medtrain

    out = tmp_path / "study"
    assert medtrain(["study", "study-demo", f"data_dir={sample_dir}", f"output_dir={out}", *overrides]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "study-demo.yaml" in line and re.search(message, line), line
    assert not out.exists()


def test_staged_variants_run_after_their_parent_each_replicate_from_its_parent_s(tmp_path: Path,
                                                                                  sample_dir: Path) -> None:
    study = Study(study_config(tmp_path, sample_dir, "pretrain_seeds=[3, 4]",
                               "variants.staged={from: biomedical, corpora: {clinical_nl: 1.0}, "
                               "sampling: temperature, temperature: 2.0}"))
    order = list(study.pretrain)
    assert order.index("biomedical-seed3") < order.index("staged-seed3")
    assert study.pretrain["staged-seed4"].model.init == study.models["biomedical-seed4"]
    assert study.pretrain["clinical-seed3"].model.init == study.models[BASELINE]
    assert [study.pretrain[r].train.seed for r in study.replicates["staged"]] == [3, 4]
    assert (study.pretrain["staged-seed3"].data.sampling, study.pretrain["staged-seed3"].data.temperature) == \
           ("temperature", 2.0)
    assert list(study.models) == [BASELINE, *(f"{v}-seed{s}" for v in ("clinical", "biomedical",
                                                                         "biomedical-clinical", "staged")
                                              for s in (3, 4))]
    # default comparisons: each variant vs the baseline, then each pair of variants
    pairs = study.cfg.comparisons()
    assert pairs[:4] == [(BASELINE, v) for v in study.cfg.variants] and len(pairs) == 4 + 6


def test_a_vocabulary_variant_and_its_children_read_shards_of_its_tokenizer(tmp_path: Path,
                                                                             sample_dir: Path) -> None:
    study = Study(study_config(tmp_path, sample_dir, "variants.clinical.vocabulary={add: 10}",
                               "variants.staged={from: clinical, corpora: {clinical_nl: 1.0}}"))
    extended = study.vocabulary_dir("clinical")
    clinical, staged = study.pretrain["clinical"], study.pretrain["staged"]
    assert clinical.model.vocabulary_extension == extended / "vocabulary_extension.json"
    assert clinical.model.tokenizer == extended  # the export carries the extended tokenizer
    assert clinical.data.shards == staged.data.shards == study.out / "shards-clinical"
    assert staged.model.vocabulary_extension is None and staged.model.init == study.models["clinical"]
    assert study.pretrain["biomedical"].data.shards == study.shards
