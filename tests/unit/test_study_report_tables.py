"""The study report's label-space and per-type tables, and the metric every table names, from small fake results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from medtrain.data.ner_format import LabelConfig
from medtrain.study.config import TaskConfig
from medtrain.study.report import Collected, _label_space_section, _per_type_section, results_table

NER = TaskConfig(name="ner-es", recipe="finetune-ner", path="ner/{lang}/{split}", train_languages=["es"],
                 test_languages=["es", "ro"], labels=LabelConfig(keep=["CHEM", "DISO"]))
SCREENING = TaskConfig(name="scr-nl", recipe="finetune-screening", path="s/{lang}/{split}.jsonl",
                       train_languages=["nl"], test_languages=["nl"], metric="auroc")


def fake_study(tmp_path: Path) -> SimpleNamespace:
    kinds = {"ner-es": "ner", "scr-nl": "screening"}
    return SimpleNamespace(cfg=SimpleNamespace(tasks=[SCREENING, NER]), kind=lambda t: kinds[t.name],
                           models={"baseline": tmp_path / "b", "clinical": tmp_path / "c"}, out=tmp_path,
                           replicates={"baseline": ["baseline"], "clinical": ["clinical"]},
                           grid_dir=tmp_path / "grid")


SPACE = {"train": ["CHEM", "DISO"], "test": {"es": ["CHEM", "DISO"], "ro": ["ANAT", "CHEM"]},
         "scored": {"es": ["CHEM", "DISO"], "ro": ["CHEM"]}, "unscored": {"es": [], "ro": ["ANAT"]},
         "dropped": {"test": {"es": {"PROC": 4}, "ro": {}}}}


def per_type(chem: float, diso: float | None = None) -> dict[str, dict[str, float]]:
    out = {"CHEM": {"precision": 1.0, "recall": 1.0, "f1": chem, "support": 7}}
    return out if diso is None else {**out, "DISO": {"precision": 1.0, "recall": 1.0, "f1": diso, "support": 3}}


def test_label_space_table_shows_each_test_language_s_types_and_what_is_scored(tmp_path: Path) -> None:
    lines = _label_space_section(fake_study(tmp_path), Collected({}, {("ner-es", "es"): SPACE}, {}))
    text = "\n".join(lines)
    assert "### ner-es; kept types: CHEM, DISO" in text
    assert "| es → ro | CHEM, DISO | ANAT, CHEM | CHEM | ANAT | - |" in lines
    assert "| es → es | CHEM, DISO | CHEM, DISO | CHEM, DISO | - | PROC 4 |" in lines
    assert _label_space_section(fake_study(tmp_path), Collected({}, {}, {})) == []  # no NER runs: no section


def test_per_type_table_averages_each_model_s_seeds(tmp_path: Path) -> None:
    collected = Collected({}, {}, {
        ("ner-es", "baseline", "es", "es"): [per_type(0.5, 0.2), per_type(0.7, 0.4)],
        ("ner-es", "clinical", "es", "es"): [per_type(0.9, 0.6), per_type(1.0)],  # DISO missing from one seed
        ("ner-es", "baseline", "es", "ro"): [per_type(0.1)],
    })
    lines = _per_type_section(fake_study(tmp_path), collected)
    assert "### ner-es (exact-offset entity F1 per type)" in lines
    assert "| train → test | type | support | baseline | clinical |" in lines
    assert "| es → es | CHEM | 7 | 0.600 | 0.950 |" in lines
    assert "| es → es | DISO | 3 | 0.300 | 0.600 |" in lines
    assert "| es → ro | CHEM | 7 | 0.100 | n/a |" in lines


def test_every_results_row_names_its_metric(tmp_path: Path) -> None:
    def scores(mean: float) -> dict[str, dict[str, object]]:
        return {"nl->nl": {"mean": mean, "std": None, "seeds": [mean]}}

    comparison = {"scr-nl": {"metric_name": "patient AUROC", "scores": {"baseline": scores(0.8),
                                                                        "clinical": scores(0.9)}},
                  "ner-es": {"metric_name": "exact-offset entity F1", "scores": {"baseline": scores(0.5),
                                                                                 "clinical": scores(0.4)}}}
    table = results_table(fake_study(tmp_path), comparison)
    assert "| scr-nl | patient AUROC | nl → nl | 0.800 | **0.900** |" in table
    assert "| ner-es | exact-offset entity F1 | nl → nl | **0.500** | 0.400 |" in table
