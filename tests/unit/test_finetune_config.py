"""Fine-tuning configs: every task's defaults form a valid config, and the config imports without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medtrain.config import build_config, config_to_dict
from medtrain.data.documents import window_spans
from medtrain.data.ner_format import BratFormat
from medtrain.errors import UserError
from medtrain.finetune import FinetuneConfig

REQUIRED = {  # per task: only what has no default
    "ner": {"format": "brat", "train": "data/ner/es/train", "dev": "data/ner/es/dev", "test": "data/ner/es/test"},
    "screening": {"format": "jsonl", "train": "data/screening/nl/train.jsonl",
                  "dev": "data/screening/nl/dev.jsonl", "test": "data/screening/nl/test.jsonl"},
}


def build(task: str, **extra: Any) -> FinetuneConfig:
    return build_config(FinetuneConfig, {"output_dir": "runs/x", "task": task, "model": "models/mbert",
                                         "data": REQUIRED[task], **extra})


@pytest.mark.parametrize("task", sorted(REQUIRED))
def test_defaults_alone_form_a_valid_config(task: str) -> None:
    cfg = build(task)
    assert cfg.task == task and cfg.train.max_length == 128 and cfg.data.test == {"es" if task == "ner" else "nl":
                                                                                  Path(REQUIRED[task]["test"])}
    stride = cfg.screening.stride
    assert isinstance(stride, int) and config_to_dict(cfg)["screening"]["stride"] == stride  # config.yaml: a number
    if task == "screening":
        assert window_spans(1000, cfg.train.max_length, stride)  # the windows these defaults ask for exist


@pytest.mark.parametrize("max_length, stride", [(128, 63), (64, 31), (8, 3), (131, 128), (256, 128), (512, 128)])
def test_unset_stride_is_128_where_it_fits_else_half_the_window(max_length: int, stride: int) -> None:
    """Where 128 was valid it stays (same windows, same grid signatures); a shorter window gets half itself."""
    assert build("screening", train={"max_length": max_length}).screening.stride == stride


def test_ner_keeps_stride_128_so_its_grid_signatures_do_not_change() -> None:
    assert build("ner", train={"max_length": 64}).screening.stride == 128


def test_a_given_stride_is_kept_and_checked() -> None:
    assert build("screening", screening={"stride": 0}).screening.stride == 0
    with pytest.raises(UserError, match=r"screening.stride must be smaller than train.max_length - 2"):
        build("screening", screening={"stride": 126})


def test_format_must_fit_the_task() -> None:
    with pytest.raises(UserError, match="data.format jsonl does not fit task ner"):
        build("ner", data={**REQUIRED["ner"], "format": "jsonl"})


def test_the_config_imports_without_torch() -> None:
    """`medtrain grid status` and the results tables read FinetuneConfig and RESULTS: no model library."""
    code = ("import sys; from medtrain.finetune import FinetuneConfig, RESULTS; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- per-language sources, labels


def test_an_old_data_section_resolves_and_serialises_as_before() -> None:
    cfg = build("ner", data={**REQUIRED["ner"], "test": {"es": "a/es", "ro": "a/ro"}})
    assert cfg.data.test == {"es": Path("a/es"), "ro": Path("a/ro")}  # paths stay paths: same config.yaml
    assert config_to_dict(cfg)["data"]["test"] == {"es": "a/es", "ro": "a/ro"}
    source = cfg.data.source("test", "ro")
    assert (source.path, source.format, source.columns) == (Path("a/ro"), "brat", None)


def test_a_language_mixes_in_a_column_file_with_its_own_reading_keys() -> None:
    ro = {"path": "ner/ro/test.conll", "format": "conll", "columns": {"token": 0, "tag": 2}, "short_lines": "skip"}
    cfg = build("ner", data={**REQUIRED["ner"], "separator": "tab", "discontinuous": "join",
                             "test": {"es": "ner/es/test", "ro": ro}})
    es, roman = cfg.data.source("test", "es"), cfg.data.source("test", "ro")
    assert es.format == "brat" and es.columns is None
    assert roman.format == "conll" and roman.path == Path("ner/ro/test.conll")
    columns = roman.columns
    assert (columns.token, columns.tag, columns.short_lines) == (0, 2, "skip")
    assert (columns.separator, columns.discontinuous, columns.document_marker) == ("tab", "join", "-DOCSTART-")
    again = build_config(FinetuneConfig, config_to_dict(cfg))  # config.yaml reads back to the same sources
    assert again.data.sources("test") == cfg.data.sources("test")


def test_section_column_defaults_apply_to_every_column_source() -> None:
    cfg = build("ner", data={"format": "conll", "columns": {"tag": 2}, "short_lines": "skip",
                             "train": {"ro": "r/train"}, "dev": {"ro": "r/dev"},
                             "test": {"ro": {"path": "r/test", "columns": {"token": 1, "tag": 3}}}})
    train = cfg.data.source("train", "ro").columns
    assert (train.tag, train.short_lines) == (2, "skip")
    assert (cfg.data.source("test", "ro").columns.token, cfg.data.source("test", "ro").columns.tag) == (1, 3)


def test_brat_and_conllu_reading_keys_resolve_per_language() -> None:
    cfg = build("ner", data={"format": "brat", "offset_mismatch": "skip", "train": {"es": "e/train"},
                             "dev": {"es": {"path": "e/dev", "offset_mismatch": "error"}},
                             "test": {"es": {"path": "e/test", "repair_window": 3},
                                      "ro": {"path": "r/test.conllu", "format": "conllu",
                                             "columns": {"tag": "misc:BioNERLabel"}, "discontinuous": "join"}}})
    assert cfg.data.source("train", "es").brat == BratFormat("skip", 8)
    assert cfg.data.source("dev", "es").brat == BratFormat("error", 8)
    assert cfg.data.source("test", "es").brat == BratFormat("skip", 3)
    ro = cfg.data.source("test", "ro")
    assert (ro.format, ro.brat, ro.columns.tag, ro.columns.discontinuous) == ("conllu", None, "misc:BioNERLabel",
                                                                               "join")
    assert build("ner").data.source("train", "es").brat == BratFormat("repair", 8)


@pytest.mark.parametrize("test, message", [
    ({"ro": {"path": "x", "fromat": "conll"}}, r"data.test.ro.fromat: unknown key; did you mean format"),
    ({"ro": {"format": "conll"}}, r"data.test.ro.path: is required"),
    ({"ro": {"path": "x", "format": "jsonl"}}, r"data.format jsonl does not fit task ner"),
    ({"ro": {"path": "x", "columns": {"tag": 2}}},
     r"data.test.ro: columns only apply to column \(conll\) and CoNLL-U files"),
    ({"ro": {"path": "x", "format": "conll", "offset_mismatch": "skip"}},
     r"data.test.ro: offset_mismatch only apply to BRAT folders"),
    ({"ro": {"path": "x", "format": "conllu"}}, r"data.test.ro: format conllu needs columns.tag: misc:KEY"),
    ({"ro": {"path": "x", "format": "conllu", "columns": {"tag": "misc:"}}}, r"columns.tag for CoNLL-U must be"),
    ({"ro": {"path": "x", "format": "conllu", "columns": {"tag": "lemmas"}}}, r"columns.tag for CoNLL-U must be"),
    ({"ro": {"path": "x", "format": "conll", "columns": {"tag": "misc:BioNERLabel"}}},
     r"data.test.ro: columns.tag of a column \(conll\) file is a column index"),
    ({"ro": {"path": "x", "offset_mismatch": "fix"}}, r"data.test.ro.offset_mismatch: must be one of"),
    ({"ro": {"path": "x", "repair_window": 0}}, r"data.test.ro: repair_window must be"),
    ({"ro": {"path": "x", "format": "conll", "columns": {"token": 2, "tag": 2}}},
     r"data.test.ro: columns.tag and columns.token name the same column"),
    ({"ro": 3}, r"data.test.ro: expected a path or a mapping"),
])
def test_bad_sources_name_their_key(test: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        build("ner", data={**REQUIRED["ner"], "test": test})


def test_labels_are_read_and_only_for_ner() -> None:
    labels = {"map": {"es": {"PROTEINAS": "CHEM"}}, "keep": ["CHEM", "DISO"]}
    cfg = build("ner", labels=labels)
    assert cfg.labels.rename("es") == {"PROTEINAS": "CHEM"} and cfg.labels.keep == ["CHEM", "DISO"]
    assert config_to_dict(cfg)["labels"] == {**labels, "strict": False}
    with pytest.raises(UserError, match="labels: entity label spaces are for task ner only"):
        build("screening", labels=labels)
    with pytest.raises(UserError, match="labels.keep is empty"):
        build("ner", labels={"keep": []})


def test_check_inputs_checks_each_source_by_its_own_format(tmp_path: Path) -> None:
    from medtrain.finetune.config import check_inputs

    (tmp_path / "es").mkdir()
    (tmp_path / "ro.conll").write_text("a\tB-X\n", encoding="utf-8")
    data = {"format": "brat", "train": {"es": str(tmp_path / "es")}, "dev": {"es": str(tmp_path / "es")},
            "test": {"ro": {"path": str(tmp_path / "ro.conll"), "format": "conll"}}}
    check_inputs(build("ner", data=data), model_pending=True)
    wrong = {**data, "test": {"ro": str(tmp_path / "ro.conll")}}  # a file where brat wants a folder
    with pytest.raises(UserError, match="data.test.ro: folder of .txt/.ann files not found"):
        check_inputs(build("ner", data=wrong), model_pending=True)
    gone = {**data, "test": {"ro": {"path": str(tmp_path / "nope.conll"), "format": "conll"}}}
    with pytest.raises(UserError, match="data.test.ro: column file"):
        check_inputs(build("ner", data=gone), model_pending=True)
