"""The fine-tuning benchmark's own logic: the CPU record every benchmark row carries, the matrix expansion, and
the medians and ratios of a configuration's interleaved runs (benchmarks/finetune_bench.py, bench_cpu.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medtrain.errors import UserError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # scripts importing each other by name; installed packages still win

import bench_cpu  # noqa: E402
import finetune_bench  # noqa: E402

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt avx f16c avx2 bmi2 avx512f avx512dq \
avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8 avx512_fp16 arch_capabilities

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx
"""

GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop \
asimddp sve sve2 bf16 i8mm
CPU implementer\t: 0x41
"""


def test_cpuinfo_keeps_the_first_processor_and_its_simd_flags() -> None:
    info = bench_cpu.parse_cpuinfo(XEON)
    assert info == {"model": "Intel(R) Xeon(R) Processor", "family": 6, "model_number": 207, "processors": 2,
                    "simd": ["fma", "sse4_1", "sse4_2", "avx", "f16c", "avx2", "avx512f", "avx512dq", "avx512_bf16",
                             "avx_vnni", "amx_bf16", "amx_tile", "amx_int8", "avx512_fp16"]}


def test_cpuinfo_on_arm_reads_features() -> None:
    info = bench_cpu.parse_cpuinfo(GRAVITON)
    assert info["model"] is None and info["family"] is None
    assert info["simd"] == ["asimd", "asimdhp", "asimdrdm", "asimddp", "sve", "sve2", "bf16", "i8mm"]


def test_cpu_record_and_label(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(XEON)
    record = bench_cpu.cpu_record(threads=1, path=str(path))
    assert record["model"] == "Intel(R) Xeon(R) Processor" and record["threads"] == 1
    assert "amx_bf16" in record["simd"] and record["usable_cpus"] >= 1 and "processors" not in record
    assert bench_cpu.cpu_label(record) == \
        "Intel(R) Xeon(R) Processor (6/207; avx2, avx512f, avx512_bf16, avx512_fp16, amx_bf16), 1 thread"
    missing = bench_cpu.cpu_record(path=str(tmp_path / "absent"))
    assert missing["simd"] == [] and missing["threads"] is None


def test_matrix_expands_blocks_and_fills_each_tasks_language(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("repeat: 2\ndefaults: {model: mini, epochs: 1, overrides: [train.log_every=5]}\n"
                    "runs:\n  - {task: ner, max_length: [64, 128]}\n  - {task: screening}\n"
                    "  - {task: ner, max_length: 64}\n")
    matrix, configs = finetune_bench.load_matrix(path)
    assert matrix.name == "m" and matrix.repeat == 2
    assert [(c["task"], c["language"], c["max_length"]) for c in configs] == \
        [("ner", "es", 64), ("ner", "es", 128), ("screening", "nl", 128)]  # the duplicate collapsed
    assert all(c["overrides"] == ["train.log_every=5"] for c in configs)  # a list value, not an axis
    assert finetune_bench.label(configs[0]) == "ner es mini/sample len64 bs16 1ep 1t train.log_every=5"


def test_matrix_with_an_unknown_axis_names_the_closest(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("runs:\n  - {task: ner, max_lenght: 64}\n")
    with pytest.raises(UserError, match="max_length"):
        finetune_bench.load_matrix(path)


def _run(system: str, repeat: int, tokens_per_s: float, f1: dict[str, float], status: str = "ok",
         auroc: float | None = None) -> dict:
    test = {lang: {"f1": value, **({"auroc": auroc} if auroc is not None else {})} for lang, value in f1.items()}
    return {"bench": "finetune", "matrix": "m", "id": "abc", "name": "ner es tiny", "config": {"task": "ner"},
            "system": system, "repeat": repeat, "status": status, "time": f"2026-12-06T10:0{repeat}:00",
            "tokens_per_s": tokens_per_s, "epoch_s": 1000 / tokens_per_s, "tokens_per_epoch": 1000,
            "tree_peak_rss_mb": 500.0 + repeat, "memory": {"rss_peak_mb": 400.0}, "test": test,
            "cpu": {"model": "x", "threads": 1}}


def test_pair_row_takes_medians_over_ok_runs_and_ratios_medtrain_over_trainer() -> None:
    runs = [_run("medtrain", 0, 900, {"es": 0.5}), _run("trainer", 0, 300, {"es": 0.4}),
            _run("medtrain", 1, 1000, {"es": 0.6}), _run("trainer", 1, 250, {"es": 0.5}),
            _run("medtrain", 2, 2000, {"es": 0.7}), _run("trainer", 2, 1, {"es": 0.0}, status="error")]
    [row] = finetune_bench.pair_rows(runs + [{"bench": "finetune-pair"}])
    m, t = row["medtrain"], row["trainer"]
    assert (m["runs"], m["ok"], t["runs"], t["ok"]) == (3, 3, 3, 2)
    assert m["tokens_per_s"] == 1000 and t["tokens_per_s"] == 275  # the failed run is left out
    assert m["epoch_s"] == pytest.approx(1.0) and t["epoch_s"] == pytest.approx((1000 / 300 + 1000 / 250) / 2)
    assert row["ratio"]["tokens_per_s"] == pytest.approx(1000 / 275)
    assert row["ratio"]["epoch_s"] == pytest.approx(1.0 / t["epoch_s"])
    assert row["ratio"]["tree_peak_rss_mb"] == pytest.approx(501 / 500.5)
    assert row["ratio"]["cuda_max_allocated_mb"] is None  # no GPU figures: no ratio
    assert m["test_f1"] == 0.6 and t["test_f1"] == pytest.approx(0.45)
    assert row["f1_difference"] == pytest.approx(0.15) and row["same_tokens"]
    assert row["time"] == "2026-12-06T10:02:00" and row["cpu"] == {"model": "x", "threads": 1}
    table = finetune_bench.markdown([row])
    assert "| ner es tiny | 1,000 | 275 | **3.64x** |" in table and "| 3+2 |" in table


def test_headline_is_the_mean_over_test_languages_and_none_when_one_lacks_it() -> None:
    assert finetune_bench.headline({"es": {"f1": 0.4}, "nl": {"f1": 0.6}}, "f1") == pytest.approx(0.5)
    assert finetune_bench.headline({"es": {"f1": 0.4}, "nl": {"f1": None}}, "f1") is None
    assert finetune_bench.headline({"es": {"f1": 0.4}}, "auroc") is None
    runs = [_run("medtrain", 0, 10, {"nl": 0.8}, auroc=0.9), _run("trainer", 0, 5, {"nl": 0.7}, auroc=0.8)]
    row = finetune_bench.pair_row(runs)
    assert (row["medtrain"]["test_auroc"], row["trainer"]["test_auroc"]) == (0.9, 0.8)


def test_no_trainer_run_gives_no_ratio() -> None:
    row = finetune_bench.pair_row([_run("medtrain", 0, 10, {"es": 0.1})])
    assert row["trainer"]["ok"] == 0 and row["ratio"]["tokens_per_s"] is None and row["f1_difference"] is None


def test_screening_subset_keeps_the_language_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = tmp_path / "sample"
    (sample / "screening" / "nl").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (sample / "screening" / "nl" / f"{split}.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(5)))
    monkeypatch.setattr(finetune_bench.bench, "CACHE", tmp_path / "cache")
    cfg = {"task": "screening", "language": "nl", "train_docs": 2}
    data = finetune_bench.data_section(cfg, sample)
    train = Path(data["train"])
    assert train.parent.name == "nl" and train.read_text() == '{"i": 0}\n{"i": 1}\n'
    assert data["test"] == {"nl": str(sample / "screening" / "nl" / "test.jsonl")}
    assert finetune_bench.data_section(cfg, sample) == data  # made once
    with pytest.raises(UserError, match="no screening notes for ro"):
        finetune_bench.data_section({**cfg, "language": "ro"}, sample)
