"""Pretraining for real: 2 CPU ranks (gloo) under the deepspeed launcher, mpirun and srun; exact resume after a
SIGKILL for ZeRO-2 and ZeRO-3; a stop signal that checkpoints; TensorBoard read back with its own reader; the
export loaded by transformers."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForMaskedLM, AutoTokenizer

from medtrain.pretrain import main as pretrain_main

from _launch import REPO, deepspeed_command, kill_group, run, start
from _pretrain_jobs import assert_same_weights

pytestmark = pytest.mark.integration

WORLD = 2
SCRIPT = str(REPO / "medtrain" / "pretrain.py")
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 128}
COMPARED = ("train/loss", "train/learning_rate", "train/grad_norm", "eval/loss", "eval/perplexity")
# Every scalar a pretraining run writes, by the Hugging Face Trainer's names (grad_norm: ZeRO 1-3 compute it).
TAGS = {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second", "train/samples_per_second",
        "train/tokens_seen", "train/memory_mb", "eval/loss", "eval/perplexity"}


def write_config(tmp_path: Path, shards: Path, stage: str, max_steps: int, **train: object) -> Path:
    config = {
        "output_dir": str(tmp_path / "unused"),
        "data": {"shards": str(shards), "micro_batch_size": 4, "num_workers": 1},
        "model": {"config": TINY},
        "deepspeed": str(REPO / "ds_configs" / f"{stage}.json"),
        "train": {"max_steps": max_steps, "lr": 1e-3, "warmup_steps": 3, "seed": 3, "save_every": 4,
                  "keep_last": 2, "eval_every": 5, "eval_batches": 3, **train},
        "progress": False,
    }
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def history(run_dir: Path) -> list[dict[str, float]]:
    """Every record without the timing figure, which legitimately differs between runs."""
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k in ("step", *COMPARED)} for line in lines]


def optimizer_fused(run_dir: Path) -> bool:
    """Whether the AdamW in the run's last checkpoint was PyTorch's fused one (its param_groups say so)."""
    [state] = (run_dir / "checkpoints").glob("step-*/*optim_states.pt")
    groups = []

    def find(value: object) -> None:
        if isinstance(value, dict):
            groups.extend(g for g in value.get("param_groups", []) if isinstance(g, dict))
            for item in value.values():
                find(item)
        elif isinstance(value, list):
            for item in value:
                find(item)

    find(torch.load(state, map_location="cpu", weights_only=False))
    assert groups, f"no optimizer param_groups in {state}"
    return all(g.get("fused") for g in groups)


def latest_step(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / "latest").read_text().strip().removeprefix("step-"))
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_sigkilled_run_resumes_to_the_same_weights_and_history(stage: str, sample_shards: Path,
                                                               tmp_path: Path) -> None:
    max_steps = 30
    config = write_config(tmp_path, sample_shards, stage, max_steps)
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    run(deepspeed_command(SCRIPT, [str(config), f"output_dir={uninterrupted}"], WORLD))

    launch = deepspeed_command(SCRIPT, [str(config), f"output_dir={killed}"], WORLD)
    proc = start(launch)
    deadline = time.monotonic() + 300
    while latest_step(killed) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    kill_group(proc, signal.SIGKILL)
    output = proc.stdout.read()
    proc.stdout.close()
    assert not (killed / "export").exists(), f"the run finished before it could be killed:\n{output[-3000:]}"
    killed_at = latest_step(killed)
    assert 8 <= killed_at < max_steps, output[-3000:]

    run(launch)  # same output_dir: resumes by itself
    assert history(killed) == history(uninterrupted)
    assert [r["step"] for r in history(killed) if "train/loss" in r] == list(range(1, max_steps + 1))
    assert_same_weights(killed, uninterrupted)
    assert len(list((killed / "checkpoints").glob("step-*"))) == 2  # keep_last

    # TensorBoard, read back with its own reader: one loss per step, the killed run's extra events purged.
    events = EventAccumulator(str(killed / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == list(range(1, max_steps + 1))
    losses = [r["train/loss"] for r in history(uninterrupted) if "train/loss" in r]
    assert [s.value for s in scalars] == pytest.approx(losses, rel=1e-6)
    assert TAGS <= set(events.Tags()["scalars"]), sorted(events.Tags()["scalars"])
    seen = events.Scalars("train/tokens_seen")
    assert seen[-1].value == max_steps * 4 * WORLD * 64  # micro-batch 4 x 2 ranks x seq_len 64, every step
    assert all(s.value > 0 for s in events.Scalars("train/memory_mb"))
    names = {k for line in (killed / "history.jsonl").read_text().splitlines() for k in json.loads(line)}
    assert names == TAGS | {"step"}  # history.jsonl uses the same names

    # The export is a Hugging Face model folder that transformers loads as is, with its tokenizer.
    model = AutoModelForMaskedLM.from_pretrained(str(killed / "export"), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(killed / "export"), local_files_only=True)
    with torch.no_grad():
        logits = model(**tokenizer("De patiënt heeft koorts.", return_tensors="pt")).logits
    assert logits.shape[-1] == tokenizer.vocab_size and torch.isfinite(logits).all()


def test_mpirun_stop_signal_checkpoints_and_resume_finishes(mpirun: list[str], sample_shards: Path,
                                                            tmp_path: Path) -> None:
    max_steps = 40
    config = write_config(tmp_path, sample_shards, "zero2", max_steps, save_every=100)
    out = tmp_path / "run"
    launch = [*mpirun, "-np", str(WORLD), sys.executable, SCRIPT, str(config), f"output_dir={out}"]
    proc = start(launch)
    deadline = time.monotonic() + 300
    while not (out / "history.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)  # mpirun forwards SIGUSR1/SIGUSR2 to every rank, as SLURM's --signal does
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "stopped by signal" in output
    stopped_at = latest_step(out)
    assert 0 < stopped_at < max_steps, output[-3000:]
    assert not (out / "export").exists()
    run(launch)
    steps = [r["step"] for r in history(out) if "train/loss" in r]
    assert steps == list(range(1, max_steps + 1))
    assert (out / "export" / "model.safetensors").is_file()


def test_srun_two_ranks(slurm_cluster, sample_shards: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, sample_shards, "zero3", 6, precision="bf16")
    out = tmp_path / "run"
    run(["srun", "--ntasks", str(WORLD), "--partition", slurm_cluster.partition, "--time", "30",
         "--kill-on-bad-exit=1", sys.executable, SCRIPT, str(config), f"output_dir={out}"])
    records = history(out)
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, 7))
    losses = [value for r in records for name, value in r.items() if name.endswith("/loss")]  # train and eval
    assert all(loss == loss and loss < 20 for loss in losses)  # finite, not NaN
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["precision"] == "bf16" and resolved["output_dir"] == str(out)


@pytest.mark.parametrize("stage, precision", [("zero2-offload", "fp32"), ("zero3-offload", "bf16"),
                                              ("zero0", "bf16"), ("zero1", "fp32")])
def test_single_process_layouts_and_precisions(stage: str, precision: str, sample_shards: Path,
                                               tmp_path: Path) -> None:
    """One process, as `python medtrain/pretrain.py` (offload builds DeepSpeed's CPU Adam on first use)."""
    config = write_config(tmp_path, sample_shards, stage, 4, precision=precision, eval_every=4)
    out = tmp_path / "run"
    run([sys.executable, SCRIPT, str(config), f"output_dir={out}"])
    records = history(out)
    train_losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(train_losses) == 4 and all(0 < loss < 20 for loss in train_losses)
    assert train_losses[-1] < train_losses[0]  # lr 1e-3 on a tiny model: the loss must move down
    assert sum("eval/loss" in r for r in records) == 1
    assert (out / "export" / "model.safetensors").is_file()


def test_missing_shards_are_one_line_exit_2(sample_shards: Path, tmp_path: Path) -> None:
    """Found after the process group is up, before rank 0 writes: through the real script, as a launcher starts
    it."""
    config = write_config(tmp_path, sample_shards, "zero2", 4)
    out = tmp_path / "run"
    output = run([sys.executable, SCRIPT, str(config), f"output_dir={out}", "data.shards=/nonexistent/shards"],
                 expect_rc=2)
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no manifest.json" in errors[0], output[-2000:]
    assert "Traceback" not in output
    assert not out.exists()


@pytest.mark.parametrize("overrides, expected", [
    (["train.precision=fp8"], "must be one of"),
    (["model.config.hiden_size=8"], "did you mean hidden_size"),
    (["deepspeed=/nonexistent/ds.json"], "DeepSpeed config not found"),
    ([f"deepspeed={REPO / 'ds_configs' / 'zero2-offload.json'}", "train.fused_optimizer=true"],
     "offloads the optimizer"),
])
def test_bad_pretrain_config_is_one_line_exit_2(overrides: list[str], expected: str, sample_shards: Path,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found while the config and its DeepSpeed JSON are read, before any rank joins the process group or writes:
    checked in this process, through the script's own entry point."""
    config = write_config(tmp_path, sample_shards, "zero2", 4)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        pretrain_main([str(config), f"output_dir={out}", *overrides])
    assert stopped.value.code == 2
    printed = capsys.readouterr()
    errors = [line for line in (printed.out + printed.err).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], printed
    assert not out.exists()


def test_accumulation_checkpointing_token_limit_and_continuing_from_an_export(sample_shards: Path,
                                                                              tmp_path: Path) -> None:
    micro, accum, seq_len = 4, 2, 64
    config = write_config(tmp_path, sample_shards, "zero2", 50, grad_accum=accum, activation_checkpointing=True,
                          max_tokens=3 * micro * accum * seq_len, eval_every=0)
    first, second = tmp_path / "first", tmp_path / "second"
    run([sys.executable, SCRIPT, str(config), f"output_dir={first}"])
    assert [r["step"] for r in history(first)] == [1, 2, 3]  # stopped by tokens, not by max_steps
    # Continue from the export as from any local Hugging Face BERT folder (e.g. a downloaded mBERT).
    run([sys.executable, SCRIPT, str(config), f"output_dir={second}", "model.config={}",
         f"model.init={first / 'export'}", "train.max_tokens=0", "train.max_steps=2", "train.warmup_steps=0"])
    first_loss = [r["train/loss"] for r in history(first)]
    second_loss = [r["train/loss"] for r in history(second)]
    assert len(second_loss) == 2
    assert second_loss[0] < first_loss[0] - 0.05  # it starts from the trained weights, not from scratch


def test_a_step_reads_nothing_back_from_the_device_except_on_log_steps(sample_shards: Path,
                                                                       tmp_path: Path) -> None:
    """A GPU runs ahead only while the host does not wait for it: the loss (and grad norm) are read back on log
    steps only; the one read every step is the stop flag, a CPU tensor reduced over gloo. Counted by a spy on
    every tensor-to-host read made from medtrain/pretrain.py, in a real single-process run."""
    config = write_config(tmp_path, sample_shards, "zero2", 8, log_every=4, eval_every=0, save_every=8)
    reads, out = tmp_path / "reads.json", tmp_path / "run"
    run([sys.executable, str(REPO / "tests" / "integration" / "_host_reads.py"), str(reads), str(config),
         f"output_dir={out}"])
    assert [r["step"] for r in history(out)] == [4, 8]
    counts = json.loads(reads.read_text())
    assert counts.pop("mean_over_ranks item cpu") == 2  # the loss, once per log step
    assert counts.pop("any_rank_stopping item cpu") == 8  # the stop flag, every step
    assert all(key.startswith("train_metrics ") and n <= 2 for key, n in counts.items()), counts


def test_sigterm_to_the_whole_process_group_saves(sample_shards: Path, tmp_path: Path) -> None:
    """SLURM signals every process of a step, DataLoader workers included; the run must still checkpoint."""
    config = write_config(tmp_path, sample_shards, "zero2", 400, save_every=1000, eval_every=0)
    out = tmp_path / "run"
    proc = start([sys.executable, SCRIPT, str(config), f"output_dir={out}"])
    deadline = time.monotonic() + 300
    while not (out / "history.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    kill_group(proc, signal.SIGTERM)
    output = proc.stdout.read()
    proc.stdout.close()
    assert proc.returncode == 0, output[-3000:]
    assert "stopped by signal" in output
    assert 0 < latest_step(out) < 400


def test_a_rank_that_stops_answering_ends_the_others_after_the_collective_timeout(sample_shards: Path,
                                                                                  tmp_path: Path) -> None:
    """A hung host (rank 1 frozen with SIGSTOP: its sockets stay open, so only a timeout can tell) must not hold
    rank 0 in a collective: it gives up after train.collective_timeout_s, says so, and exits 1."""
    timeout_s = 5
    config = write_config(tmp_path, sample_shards, "zero2", 1000, save_every=1000, eval_every=0,
                          collective_timeout_s=timeout_s)
    out = tmp_path / "run"
    proc = start(deepspeed_command(SCRIPT, [str(config), f"output_dir={out}"], WORLD))
    try:
        deadline = time.monotonic() + 300
        while len(history(out) if (out / "history.jsonl").exists() else []) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before step 3"
            time.sleep(0.1)
        # The ranks, not their DataLoader workers (which share their command line).
        ranks = {r: p for p in psutil.Process(proc.pid).children(recursive=True)
                 for r in (0, 1) if f"--local_rank={r}" in p.cmdline() and f"--local_rank={r}" not in p.parent().cmdline()}
        ranks[1].send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        ranks[0].wait(timeout=120)
        waited = time.monotonic() - stopped
        ranks[1].send_signal(signal.SIGCONT)  # so the launcher's SIGTERM can end it
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_group(proc, signal.SIGKILL)
    assert timeout_s <= waited < timeout_s + 60, output[-3000:]
    assert "collectives time out after 5s (train.collective_timeout_s)" in output
    assert re.search(r"rank 0: a collective failed: .*[Tt]imed out", output), output[-3000:]
    assert "rank 0: a peer died or stopped answering within train.collective_timeout_s=5s; exiting. The next start " \
           "resumes from the beginning (no checkpoint yet)" in output
    assert proc.returncode != 0


def test_compiled_encoder_eager_attention_and_unfused_adamw_train_like_the_default(
        sample_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.compile, model.attention and train.fused_optimizer change kernels, not the model: with dropout off
    (the compiled graph draws its dropout masks from another generator), every step's loss matches the default
    run's within 1e-4 relative; config.yaml records what the run used (unset on CPU: compile off, fp32, fused
    AdamW), and so does the optimizer state in the checkpoint. Only the compiled run leaves generated code in
    its inductor cache, so it did run compiled. (That the attention setting reaches the model:
    tests/unit/test_model.py.)"""
    config = write_config(tmp_path, sample_shards, "zero3", 4, eval_every=0)
    no_dropout = {**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    runs = {"default": [], "compiled": ["train.compile=true"], "eager": ["model.attention=eager"],
            "unfused": ["train.fused_optimizer=false"]}
    losses = {}
    for name, overrides in runs.items():
        out = tmp_path / name
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / f"{name}-inductor"))
        output = run([sys.executable, SCRIPT, str(config), f"output_dir={out}",
                      f"model.config={json.dumps(no_dropout)}", *overrides])
        assert ("encoder compiled with torch.compile" in output) is (name == "compiled")
        generated = [f for f in (tmp_path / f"{name}-inductor").rglob("*") if f.is_file()]
        assert bool(generated) is (name == "compiled"), generated[:3]
        losses[name] = [r["train/loss"] for r in history(out) if "train/loss" in r]
        saved = yaml.safe_load((out / "config.yaml").read_text())
        assert saved["train"]["compile"] is (name == "compiled")
        assert saved["model"]["attention"] == ("eager" if name == "eager" else "sdpa")
        assert saved["train"]["precision"] == "fp32"
        assert saved["train"]["fused_optimizer"] is (name != "unfused")
        assert optimizer_fused(out) is (name != "unfused")
    assert len(losses["default"]) == 4
    for name in ("compiled", "eager", "unfused"):
        assert losses[name] == pytest.approx(losses["default"], rel=1e-4), name
