"""benchmarks/gpu_check.sh, every step on CPU (--cpu), installing its wheels the way a GPU machine without network
will (`make gpu-wheels`, here for this interpreter): so the first GPU run is not the script's first run. Without
a GPU, GPU mode stops at its check with one line that says so."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForMaskedLM

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["install", "check", "versions", "data", "bench", "profile", "pretrain", "finetune", "finetune-bench",
         "report"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make gpu-wheels` for this interpreter's python version (the GPU machine's is 3.12)."""
    out = tmp_path_factory.mktemp("wheels") / "gpu-wheels"
    python = ".".join(platform.python_version_tuple()[:2])
    made = subprocess.run(["make", "-s", "gpu-wheels", f"GPU_WHEELS={out}", f"GPU_PYTHON={python}",
                           f"PY={sys.executable}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    return out


def gpu_check(out: Path, wheels: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *mode, str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                            "GPU_WHEELS": str(wheels), "HOME": str(out.parent),
                                            "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]})


def test_the_wheels_stay_small_and_hold_what_the_gpu_machine_lacks(wheels: Path) -> None:
    names = {w.name.split("-")[0].lower() for w in wheels.glob("*.whl")}
    assert {"medtrain", "deepspeed", "submitit", "seqeval", "pydantic", "pydantic_core", "datasets"} <= names
    assert sum(w.stat().st_size for w in wheels.glob("*.whl")) < 60 * 2**20


def test_every_step_runs_on_cpu(wheels: Path, tmp_path: Path) -> None:
    out = tmp_path / "check"
    done = gpu_check(out, wheels, "--cpu")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [name for name, _, _ in steps] == STEPS and {rc for _, _, rc in steps} == {"0"}
    assert (out / "site" / "deepspeed").is_dir()  # installed from the wheels, not taken from the venv
    rows = [json.loads(line) for path in (out / "results").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert len(rows) == 10 and {row["status"] for row in rows} == {"ok"}, [row.get("error") for row in rows]
    [profiled] = [json.loads(line) for path in (out / "results" / "profiled").glob("*.jsonl")
                  for line in path.read_text().splitlines()]
    assert profiled["status"] == "ok" and "s512" in profiled["name"]
    ops = (Path(profiled["profile"]) / "ops-rank0.txt").read_text()
    assert "aten::mm" in ops and "Self CPU" in ops  # torch.profiler's table of the measured steps
    assert Path(profiled["profile"]).is_relative_to(out)
    saved = yaml.safe_load((out / "pretrain" / "config.yaml").read_text())
    assert saved["train"]["precision"] == "fp32" and saved["train"]["fused_optimizer"] is True  # unset: CPU's
    report = (out / "report" / "report.md").read_text()
    assert "## medtrain against the Hugging Face Trainer" in report and "hf-grouped" in report
    assert (out / "report" / "throughput_vs_micro_batch.png").is_file()
    versions = json.loads((out / "versions.json").read_text())
    [deepspeed_wheel] = wheels.glob("deepspeed-*.whl")
    assert versions["gpu"] is None and versions["deepspeed"] == deepspeed_wheel.name.split("-")[1]
    AutoModelForMaskedLM.from_pretrained(str(out / "pretrain" / "export"))
    assert json.loads((out / "finetune" / "results.json").read_text())["eval_languages"] == ["es"]
    tuned = json.loads((out / "finetune-bench" / "rows.json").read_text())
    runs, pairs = [r for r in tuned if r["bench"] == "finetune"], [r for r in tuned if r["bench"] == "finetune-pair"]
    assert len(runs) == 6 and {r["status"] for r in runs} == {"ok"}, [r.get("log_tail") for r in runs]
    assert {(p["config"]["task"], p["config"]["max_length"]) for p in pairs} == \
        {("ner", 128), ("screening", 128), ("screening", 256)}
    assert all(p["medtrain"]["test_f1"] is not None and p["trainer"]["test_f1"] is not None for p in pairs)
    assert all(r["cpu"]["model"] and r["cpu"]["threads"] == 1 for r in runs)
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check (cpu mode)") and "| finetune |" in summary
    assert "| finetune-bench |" in summary and "## Fine-tuning: medtrain against the Hugging Face Trainer" in summary


def test_without_a_gpu_the_gpu_mode_stops_at_its_check(wheels: Path, tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU")
    out = tmp_path / "check"
    done = gpu_check(out, wheels)
    assert done.returncode == 1
    assert "no CUDA device visible to torch (torch.cuda.is_available() is False); --cpu runs the check on CPU" \
        in done.stderr
    assert "gpu_check: step check failed with exit 1" in done.stderr and not (out / "results").exists()
