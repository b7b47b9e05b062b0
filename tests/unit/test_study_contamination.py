"""The study's decontamination: the `exclude` section it builds for prepare from the tasks, and the report's lines
from the shards' manifest `exclusion` (hand-written here: no data is read, nothing is prepared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtrain.config import load_config
from medtrain.study import contamination
from medtrain.study.config import BASELINE, StudyConfig
from medtrain.study.plan import Study


def study_of(tmp_path: Path, *overrides: str) -> Study:
    """The demo study over an empty data folder (building the plan reads no task data)."""
    data = tmp_path / "data"
    return Study(load_config(StudyConfig, "study-demo", [f"data_dir={data}", f"output_dir={tmp_path / 'study'}",
                                                         *overrides]))


def sources(study: Study) -> dict[str, dict]:
    """The prepare config's exclusion sources by name."""
    assert study.prepare.exclude is not None
    return {s.name: s for s in study.prepare.exclude.sources}


# ----------------------------------------------------------------------------- the exclude section


def test_every_read_dev_and_test_split_of_every_task_is_excluded_once_under_its_first_name(tmp_path: Path) -> None:
    study = study_of(tmp_path)
    data = (tmp_path / "data").resolve()
    by_name = sources(study)
    # screening-nl trains on nl (dev read) and tests nl, ro, es; ner-ro and ner-es share their paths, so ner-es
    # adds only what ner-ro does not read: the es dev set (ner-ro trains on ro)
    assert list(by_name) == ["screening-nl/nl/dev", "screening-nl/nl/test", "screening-nl/ro/test",
                             "screening-nl/es/test", "ner-ro/ro/dev", "ner-ro/ro/test", "ner-ro/es/test",
                             "ner-ro/nl/test", "ner-es/es/dev"]
    assert not any(name.endswith("/train") for name in by_name)
    assert by_name["ner-ro/es/test"].path == data / "ner/es/test" and by_name["ner-ro/es/test"].format == "brat"
    ro = by_name["ner-ro/ro/test"]
    assert ro.path == data / "ner/ro/split/test.conllu" and ro.format == "conllu"
    assert (ro.columns.tag, ro.columns.discontinuous) == ("misc:BioNERLabel", "join")  # as fine-tuning reads it
    assert by_name["screening-nl/es/test"].path == data / "screening/es/test.jsonl"
    assert all(s.path.is_absolute() for s in by_name.values())
    assert (study.prepare.exclude.ngram, study.prepare.exclude.containment) == (13, 0.5)
    assert study.prepare.exclude.by == []  # the demo corpora's records carry no patient_id


def test_an_unread_dev_or_test_split_is_excluded_where_it_exists(tmp_path: Path) -> None:
    """screening-nl tests ro but never reads ro's dev set: listed when the file is there, not required."""
    (tmp_path / "data/screening/ro").mkdir(parents=True)
    (tmp_path / "data/screening/ro/dev.jsonl").write_text("")
    by_name = sources(study_of(tmp_path))
    assert "screening-nl/ro/dev" in by_name and "screening-nl/es/dev" not in by_name


def test_patients_are_excluded_when_a_corpus_record_names_one(tmp_path: Path) -> None:
    corpora = tmp_path / "data/corpora"
    corpora.mkdir(parents=True)
    (corpora / "clinical_nl.jsonl").write_text('\n{"text": "note", "patient_id": "nl-00001"}\n')
    assert study_of(tmp_path).prepare.exclude.by == ["patient_id"]


def test_without_a_screening_task_there_are_no_evaluation_patients(tmp_path: Path) -> None:
    corpora = tmp_path / "data/corpora"
    corpora.mkdir(parents=True)
    (corpora / "clinical_nl.jsonl").write_text('{"text": "note", "patient_id": "nl-00001"}\n')
    study = study_of(tmp_path, "tasks.0.path=ner/{lang}/{split}", "tasks.0.recipe=finetune-ner",
                     "tasks.0.metric=f1")
    assert study.prepare.exclude.by == []
    assert all(s.format != "jsonl" for s in study.prepare.exclude.sources)


def test_decontaminate_false_builds_no_exclusion(tmp_path: Path) -> None:
    assert study_of(tmp_path, "decontaminate=false").prepare.exclude is None


@pytest.mark.parametrize("decontaminate", ["true", "false"])
def test_the_user_s_own_exclude_is_used_as_given(tmp_path: Path, decontaminate: str) -> None:
    study = study_of(tmp_path, f"decontaminate={decontaminate}",
                     "prepare.exclude={sources: [{path: ner/es/test, name: pharmaconer-test}], ngram: 8}")
    exclude = study.prepare.exclude
    assert [s.name for s in exclude.sources] == ["pharmaconer-test"] and exclude.ngram == 8
    assert exclude.sources[0].path == Path("ner/es/test")  # resolved against data_root by prepare, as written


# ----------------------------------------------------------------------------- the report


def exclusion(study: Study) -> dict:
    """A manifest's exclusion as prepare writes it: sources at their absolute paths, a few drops per corpus."""
    names = [s.name for s in study.prepare.exclude.sources]
    return {
        "rule": {"ngram": 13, "containment": 0.5, "by": []},
        "sources": [{"name": s.name, "path": str(s.path), "format": s.format, "sha256": "0" * 64, "documents": 4,
                     "ngrams": 100, "patients": 0} for s in study.prepare.exclude.sources],
        "dropped": {
            "clinical_es": {"ner-ro/es/test": {"documents": 2, "tokens": 1500},   # ner-ro's and ner-es's test set
                            "screening-nl/es/test": {"documents": 1, "tokens": 200}},
            "biomedical_es": {"ner-es/es/dev": {"documents": 3, "tokens": 900}},
            "general_es": {"ner-ro/es/test": {"documents": 7, "tokens": 7000}},     # the baseline's corpus
        },
        "raw_coverage": {
            "clinical_es": {name: 0.0 for name in names} | {"ner-ro/es/test": 0.41, "screening-nl/es/test": 0.2},
            "biomedical_es": {name: 0.0 for name in names} | {"ner-ro/es/test": 0.55},
            "clinical_nl": {"screening-nl/nl/test": 0.3},
        },
    }


def test_models_section_counts_what_was_dropped_per_task_from_each_model_s_own_corpora(tmp_path: Path) -> None:
    study = study_of(tmp_path)
    record = exclusion(study)
    lines = contamination.removed_lines(study, {m: record for m in [BASELINE, *study.cfg.variants]})
    text = "\n".join(lines)
    assert "| task (dev + test) | baseline | clinical | biomedical | biomedical-clinical |" in lines
    # the tasks share their NER paths, listed under the first task's name: es test and es dev count for both
    assert "| ner-ro | 7 / 7,000 | 2 / 1,500 | 3 / 900 | 2 / 1,500 |" in lines
    assert "| ner-es | 7 / 7,000 | 2 / 1,500 | 3 / 900 | 2 / 1,500 |" in lines
    assert "| screening-nl | 0 / 0 | 1 / 200 | 0 / 0 | 1 / 200 |" in lines
    assert "| all evaluation sources | 7 / 7,000 | 3 / 1,700 | 3 / 900 | 3 / 1,700 |" in lines
    assert "at least 0.5 of one evaluation document's distinct word 13-grams" in text
    assert "every task's dev and test sets" in text and "(9 sources)" in text
    assert not contamination.off_lines(study)


def test_why_section_shows_the_largest_raw_share_of_each_test_set_over_the_model_s_corpora(tmp_path: Path) -> None:
    study = study_of(tmp_path)
    record = exclusion(study)
    lines = contamination.leak_lines(study, {m: record for m in [BASELINE, *study.cfg.variants]})
    assert "| test set | baseline | clinical | biomedical | biomedical-clinical |" in lines
    # biomedical-clinical was pretrained on biomedical then clinical text: the larger share, and where
    # the baseline's corpora have no raw_coverage entry here: "-"; a share of 0 names no corpus
    assert "| ner-ro/es/test | - | 0.410 (clinical_es) | 0.550 (biomedical_es) | 0.550 (biomedical_es) |" in lines
    assert "| ner-es/es/test | - | 0.410 (clinical_es) | 0.550 (biomedical_es) " \
           "| 0.550 (biomedical_es) |" in lines  # the same files, under ner-ro's name
    assert "| screening-nl/nl/test | - | 0.300 (clinical_nl) | 0.000 | 0.300 (clinical_nl) |" in lines
    assert any("largest share over the corpora" in line for line in lines)


def test_a_model_whose_shards_have_no_record_shows_no_column(tmp_path: Path) -> None:
    study = study_of(tmp_path)
    lines = contamination.removed_lines(study, {BASELINE: None, "clinical": exclusion(study)})
    assert "| task (dev + test) | clinical |" in lines
    assert contamination.leak_lines(study, {}) == []


def test_decontamination_off_is_a_bold_line_and_no_tables(tmp_path: Path) -> None:
    study = study_of(tmp_path, "decontaminate=false")
    (line, blank) = contamination.off_lines(study)
    assert line.startswith("**Decontamination was off: the tasks' dev and test text may be in the pretraining "
                           "corpora**") and "decontaminate: false" in line and blank == ""
    assert contamination.removed_lines(study, {BASELINE: None}) == []


def test_the_report_reads_each_model_s_exclusion_from_the_shards_it_reads(tmp_path: Path) -> None:
    from medtrain.study.contamination import read_exclusions

    study = study_of(tmp_path, "variants.clinical.vocabulary={add: 10}")
    study.shards.mkdir(parents=True)
    (study.shards / "manifest.json").write_text(json.dumps({"exclusion": {"rule": {"ngram": 13}}}))
    found = read_exclusions(study)
    assert found[BASELINE] == found["biomedical"] == {"rule": {"ngram": 13}}
    assert found["clinical"] is None  # shards-clinical (its own tokenizer) not prepared yet


def test_a_user_s_source_counts_for_the_task_whose_split_is_at_its_path(tmp_path: Path) -> None:
    study = study_of(tmp_path, "prepare.exclude={sources: [{path: ner/es/test, name: pharmaconer-test}]}")
    record = {"rule": {"ngram": 13, "containment": 0.5, "by": []},
              "sources": [{"name": "pharmaconer-test", "path": "ner/es/test", "format": "brat"}],
              "dropped": {"clinical_es": {"pharmaconer-test": {"documents": 2, "tokens": 30}}},
              "raw_coverage": {"clinical_es": {"pharmaconer-test": 0.25}}}
    lines = contamination.removed_lines(study, {"clinical": record})
    assert "| ner-es | 2 / 30 |" in lines and "| screening-nl | 0 / 0 |" in lines
    assert any("`prepare.exclude` as given (1 sources)" in line for line in lines)
    assert "| ner-ro/es/test | 0.250 (clinical_es) |" in contamination.leak_lines(study, {"clinical": record})


def test_prepare_runs_every_time_on_the_study_s_own_folder_so_a_changed_exclusion_is_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare decides whether the shards are current (and returns at once when they are): the study lets it
    replace them, its own folder, when the exclusion (or anything else in the config) changed."""
    import medtrain.data.pack
    from medtrain.study.stages import stage_prepare

    calls = []
    monkeypatch.setattr(medtrain.data.pack, "prepare", calls.append)
    study = study_of(tmp_path)
    study.shards.mkdir(parents=True)
    (study.shards / "manifest.json").write_text("{}")
    said: list[str] = []
    stage_prepare(study, said.append)
    (cfg,) = calls
    assert cfg.overwrite and cfg.output_dir == study.shards and cfg.exclude == study.prepare.exclude
    assert said == [f"[1/5] prepare: checking {study.shards} is current"]


def test_a_run_trained_on_other_shards_is_refused_not_reused(tmp_path: Path) -> None:
    """Shards prepared again (e.g. decontaminate switched on) under a finished run: the study names what is
    stale instead of reporting a model that streamed the old shards."""
    from medtrain.data.shards import FORMAT_VERSION, MANIFEST
    from medtrain.errors import UserError
    from medtrain.study.stages import _refuse_other_shards

    study = study_of(tmp_path)
    name = next(n for n in study.pretrain if n != BASELINE)
    shards = study.shards_for(study.model_of[name])
    shards.mkdir(parents=True)
    (shards / MANIFEST).write_text(json.dumps({
        "format_version": FORMAT_VERSION, "seq_len": 8, "dtype": "<u2", "vocab_size": 10, "tokenizer": "tokenizer",
        "tokenizer_fingerprint": "t", "special_ids": {}, "corpora": [], "shards": []}))
    checkpoints = study.pretrain_dir(name) / "checkpoints"
    (checkpoints / "step-00000010").mkdir(parents=True)
    (checkpoints / "latest").write_text("step-00000010\n")
    state = checkpoints / "step-00000010" / "rank-00000.json"
    from medtrain.data.shards import read_manifest

    state.write_text(json.dumps({"step": 10, "loader": {"manifest": read_manifest(shards).fingerprint()}}))
    _refuse_other_shards(study, name)  # the same shards: nothing to say
    state.write_text(json.dumps({"step": 10, "loader": {"manifest": "0123456789abcdef"}}))
    with pytest.raises(UserError, match=f"pretraining run {name} streamed other shards"):
        _refuse_other_shards(study, name)
