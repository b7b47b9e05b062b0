"""One benchmark configuration of medtrain's training step, in a fresh process (started by benchmarks/run.py).

    python benchmarks/worker.py --config RUN.json --out RESULT.json                 # one process
    deepspeed --num_gpus 2 benchmarks/worker.py --config RUN.json --out RESULT.json # several (also srun, mpirun)

It times the objects `medtrain.pretrain.build()` returns (the same engine, loader and model a pretraining run
trains with, from the pretraining config in RUN.json's `pretrain` section): `warmup_steps` + `measure_steps`
optimizer steps; no checkpoints, no evaluation, nothing logged. RUN.json is one resolved configuration written
by run.py (paths already absolute). Rank 0 writes
RESULT.json; a rank that runs out of memory (CUDA OOM, or its RSS above `rss_limit_mb`) writes
RESULT.rank<k>.json with status "oom" and exits, so the runner records the configuration and goes on.

Timing: a step's time runs from the end of the previous step to the end of this one (CUDA synchronised), so it
includes waiting for the batch; `data_wait` is the part spent in `next(loader)`. Figures are per optimizer step
over the measured steps; tokens are the whole job's (all ranks).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import threading
import time
from typing import Any

PROCESS_START = time.perf_counter()  # before torch, DeepSpeed and medtrain are imported
OOM_EXIT = 86  # the exit code of a rank that ran out of memory (the runner also reads the rank files)
MiB = 1 << 20


# ----------------------------------------------------------------------------- helpers shared with baseline_hf.py


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A memory field of /proc/PID/status (VmRSS, VmHWM, ...), in KiB; 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return 0


def children_rss_mb() -> float:
    """Summed RSS of this process's live children (DataLoader workers), MiB."""
    total = 0
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            pids = f.read().split()
    except OSError:
        return 0.0
    for pid in pids:
        total += proc_status_kb("VmRSS", pid)
    return round(total / 1024, 1)


class RssWatchdog:
    """CPU has no out-of-memory error in practice (it swaps, or the kernel kills something): this makes RSS above
    a limit this process's OOM. It polls VmRSS every 20 ms and calls `on_exceed(rss_mb)` once."""

    def __init__(self, limit_mb: float, on_exceed):
        self.limit_mb, self.on_exceed, self.peak_mb = limit_mb, on_exceed, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            rss = proc_status_kb("VmRSS") / 1024
            self.peak_mb = max(self.peak_mb, rss)
            if rss > self.limit_mb:
                self.on_exceed(rss)
                return

    def stop(self) -> None:
        self._stop.set()


def summarize(values: list[float]) -> dict[str, float]:
    """Median and spread (p10, p90, min, max, coefficient of variation) of per-step values."""
    if not values:
        return {}
    ordered = sorted(values)

    def pct(q: float) -> float:
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    mean = statistics.fmean(ordered)
    cv = statistics.pstdev(ordered) / mean if mean else 0.0
    return {"median": statistics.median(ordered), "p10": pct(0.1), "p90": pct(0.9), "min": ordered[0],
            "max": ordered[-1], "cv": cv, "n": len(ordered)}


def versions() -> dict[str, Any]:
    """Hardware and software this process runs on."""
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"host": socket.gethostname(), "python": platform.python_version(),
                           "platform": platform.platform(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
                           "cpus_usable": len(os.sched_getaffinity(0)),
                           "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                           "torch_threads": torch.get_num_threads(),
                           "load_average": [round(x, 2) for x in os.getloadavg()]}  # others' work on the machine
    for package in ("torch", "deepspeed", "transformers", "accelerate", "datasets", "numpy", "tokenizers"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpus=torch.cuda.device_count(), gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), driver=_nvidia_driver())
    else:
        out.update(gpu=None, gpus=0)
    out["git"] = _git_rev()
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or None


def _nvidia_driver() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def _git_rev() -> str | None:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_rate(torch_module) -> dict[str, Any]:
    """The device's peak bf16 rate from benchmarks/flops.py (None on CPU or an unknown GPU)."""
    from flops import peak_for

    if not torch_module.cuda.is_available():
        return {"peak_device": None, "peak_flops": None}
    found = peak_for(torch_module.cuda.get_device_name(0))
    return {"peak_device": found[0] if found else None, "peak_flops": found[1] if found else None}


def throughput(step_times: list[float], tokens_per_step: list[int], sequences_per_step: list[int]) -> dict[str, Any]:
    """Per-step rates, summarised, and the overall rate over the measured time."""
    total = sum(step_times)
    return {
        "step_time_s": summarize(step_times),
        "tokens_per_s": summarize([t / s for t, s in zip(tokens_per_step, step_times)]),
        "samples_per_s": summarize([n / s for n, s in zip(sequences_per_step, step_times)]),
        "tokens_per_s_overall": sum(tokens_per_step) / total if total else None,
        "measured_s": total,
        "step_times_s": [round(s, 4) for s in step_times],
    }


class StepProfile:
    """`run.py --profile`: torch.profiler over the first (at most 5) measured steps, after the warm-up ones,
    written to RUN.json's `profile` folder as ops-rank<R>.txt (operators by self time, the device's where there
    is one) and trace-rank<R>.json (chrome://tracing, Perfetto). Without `profile` it does nothing."""

    def __init__(self, cfg: dict[str, Any], rank: int = 0):
        import torch

        self.folder, self.rank, self.cuda = cfg.get("profile"), rank, torch.cuda.is_available()
        self.profiler = None
        if self.folder:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            warm = cfg["warmup_steps"]
            self.profiler = torch.profiler.profile(
                activities=activities, on_trace_ready=self._write,
                schedule=torch.profiler.schedule(wait=max(0, warm - 1), warmup=min(1, warm),
                                                 active=min(5, cfg["measure_steps"]), repeat=1))

    def __enter__(self) -> StepProfile:
        if self.profiler is not None:
            self.profiler.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.profiler is not None:
            self.profiler.__exit__(*exc)

    def step(self) -> None:
        """Call at the end of every optimizer step."""
        if self.profiler is not None:
            self.profiler.step()

    def _write(self, profiler: Any) -> None:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        order = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=order, row_limit=40)
        (folder / f"ops-rank{self.rank}.txt").write_text(table, encoding="utf-8")
        profiler.export_chrome_trace(str(folder / f"trace-rank{self.rank}.json"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def rank_file(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.rank{rank}.json")


def cpu_threads(cfg: dict[str, Any], world_on_node: int) -> int:
    """`threads` from the configuration, or (0) the usable cores shared out among this node's ranks."""
    return int(cfg.get("threads") or max(1, len(os.sched_getaffinity(0)) // max(1, world_on_node)))


# ----------------------------------------------------------------------------- memory estimates


def model_states_estimates(model: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """DeepSpeed's analytic estimate for this stage and offload (medtrain.engine), and our own, in bytes.

    DeepSpeed's assumes mixed precision (16-bit weights and gradients, fp32 master weights and Adam states) and
    has none for stage 0. "device" is per GPU (per rank on CPU, where device memory is host memory), "host" per
    node. Ours follows the run's precision: 16-bit runs keep an fp32 master copy, fp32 runs do not.
    """
    from medtrain.engine import model_states_estimate

    procs, nodes, stage, offload = cfg["procs"], cfg["nodes"], cfg["zero"], cfg["offload"]
    found = model_states_estimate(model, stage, offload, procs, nodes)
    total_params, largest_layer = found.pop("total_params"), found.pop("largest_layer_params")
    world = procs * nodes
    p, part = total_params, total_params / world
    w = 2 if cfg["precision"] in ("bf16", "fp16") else 4  # weights and gradients
    master = 4 if w == 2 else 0  # fp32 master weights, 16-bit runs only
    adam = 8  # exp_avg + exp_avg_sq, fp32
    weights = w * (part + largest_layer) if stage == 3 else w * p
    grads = w * (part if stage >= 2 else p)
    states = (master + adam) * (p if stage == 0 else part)
    host = 0.0
    if offload != "none":  # master weights, Adam states and fp32 gradients live (and step) on the host
        host, states = (4 + adam + 4) * (p if stage == 0 else part), 0
        if offload == "all":  # ZeRO-3 parameters too; the device keeps the layer being computed
            host += w * part
            weights = w * largest_layer
    device_b, host_b = weights + grads + states, host * procs
    ours = {"device": int(device_b), "host": int(host_b), "precision": cfg["precision"]}
    return {"total_params": total_params, "largest_layer_params": largest_layer,
            "ds": found if found["function"] else None, "analytic": ours}


# ----------------------------------------------------------------------------- the run


def run(cfg: dict[str, Any], out: Path) -> int:
    import torch

    from flops import FORMULA, BertShape, train_step_flops
    from medtrain import dist
    from medtrain.config import build_config
    from medtrain.pretrain import PretrainConfig, build

    started = time.perf_counter()
    info = dist.discover()
    torch.set_num_threads(cpu_threads(cfg, info.local_world_size))
    state: dict[str, Any] = {"phase": "build"}

    def oom(kind: str, detail: str) -> None:
        write_json(rank_file(out, info.rank), {"status": "oom", "oom_kind": kind, "detail": detail,
                                               "phase": state["phase"], "rank": info.rank})
        sys.stderr.write(f"rank {info.rank}: out of memory ({kind}: {detail}) during {state['phase']}\n")
        sys.stderr.flush()
        os._exit(OOM_EXIT)

    watchdog = None
    if cfg.get("rss_limit_mb"):
        watchdog = RssWatchdog(cfg["rss_limit_mb"], lambda rss: oom("rss_limit", f"RSS {rss:.1f} MiB > "
                                                                              f"{cfg['rss_limit_mb']} MiB"))
    cuda = torch.cuda.is_available()
    rss_base_mb = proc_status_kb("VmRSS") / 1024  # after imports: what the run adds is above
    try:
        # What pretraining builds, in its order (dist -> data -> model -> engine -> checkpoint -> monitor), from
        # the pretraining config run.py wrote; nothing is evaluated, saved or logged while timing.
        pretrain_cfg = build_config(PretrainConfig, cfg["pretrain"])
        built = build(pretrain_cfg, info)  # resolves the unset fast-path switches for this machine
        engine, manifest = built.engine, built.manifest
        estimates = model_states_estimates(built.model, cfg)
        if cuda:
            torch.cuda.synchronize()
        setup_s = time.perf_counter() - started
        steps = cfg["warmup_steps"] + cfg["measure_steps"]

        # The loop: like pretrain.py's, timed.
        state["phase"] = "steps"
        shape = BertShape.from_config(cfg["model_config"], built.model.mlm.config.vocab_size)
        batches = iter(built.loader)
        step_times, waits, masked_per_step, losses = [], [], [], []
        first_step_s = None
        with StepProfile(cfg, info.rank) as profile:
            previous = time.perf_counter()
            for step in range(steps):
                wait, masked = 0.0, 0
                for _ in range(cfg["grad_accum"]):
                    t0 = time.perf_counter()
                    batch = next(batches)
                    wait += time.perf_counter() - t0
                    masked += batch.num_masked
                    loss = engine(*batch.to(engine.device))
                    engine.backward(loss)
                    engine.step()
                losses.append(loss.item())  # synchronises with the device; so does the next line
                if cuda:
                    torch.cuda.synchronize()
                now = time.perf_counter()
                if step == 0:
                    first_step_s = now - previous
                if step >= cfg["warmup_steps"]:
                    step_times.append(now - previous)
                    waits.append(wait)
                    masked_per_step.append(masked)
                profile.step()
                previous = time.perf_counter()  # the profiler's own work at a step's end stays out of the next
    except torch.OutOfMemoryError as exc:
        oom("cuda", str(exc).splitlines()[0])
        raise  # not reached
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            oom("runtime", str(exc).splitlines()[0])
        raise
    if watchdog is not None:
        watchdog.stop()
        if proc_status_kb("VmHWM") / 1024 > cfg["rss_limit_mb"]:  # a peak between two polls
            oom("rss_limit", f"peak RSS {proc_status_kb('VmHWM') / 1024:.0f} MiB > {cfg['rss_limit_mb']} MiB")

    # Figures of this rank, then gathered on rank 0.
    seqs_rank = cfg["micro_batch"] * cfg["grad_accum"]
    flops = [train_step_flops(shape, seqs_rank, manifest.seq_len, m, cfg["activation_checkpointing"])
             for m in masked_per_step]
    mine = {
        "rank": info.rank,
        "step_times": step_times,
        "data_wait_s": sum(waits),
        "model_flops": sum(f["model_flops"] for f in flops),
        "hardware_flops": sum(f["hardware_flops"] for f in flops),
        "masked_tokens": sum(masked_per_step),
        "rss_base_mb": round(rss_base_mb, 1),
        "rss_peak_mb": round(proc_status_kb("VmHWM") / 1024, 1),
        "rss_end_mb": round(proc_status_kb("VmRSS") / 1024, 1),
        "loader_workers_rss_mb": children_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "final_loss": losses[-1] if losses else None,
    }
    if cuda:
        mine.update(cuda_max_allocated_mb=round(torch.cuda.max_memory_allocated() / MiB, 1),
                    cuda_max_reserved_mb=round(torch.cuda.max_memory_reserved() / MiB, 1))
    ranks = [mine]
    if torch.distributed.is_initialized() and info.world_size > 1:
        ranks = [None] * info.world_size
        torch.distributed.all_gather_object(ranks, mine)
    if info.rank == 0:
        world = info.world_size
        step_time = [max(r["step_times"][i] for r in ranks) for i in range(len(step_times))]
        seq_step = seqs_rank * world
        tokens_step = seq_step * manifest.seq_len
        result: dict[str, Any] = {
            "status": "ok",
            **throughput(step_time, [tokens_step] * len(step_time), [seq_step] * len(step_time)),
            "tokens_per_step": tokens_step,
            "first_step_s": first_step_s,
            "setup_s": setup_s,
            "setup_phases_s": {"imports": round(started - PROCESS_START, 2), "build": round(setup_s, 2)},
            "data_wait_fraction": max(r["data_wait_s"] for r in ranks) / sum(step_time) if step_time else None,
            "masked_fraction": sum(r["masked_tokens"] for r in ranks) / (tokens_step * len(step_time)),
            "final_loss": mine["final_loss"],
            "memory": {"per_rank": [{k: r[k] for k in r if k.startswith(("rss", "cuda", "loader"))} for r in ranks],
                       "estimate": estimates},
            "flops": {"formula": FORMULA, "model_flops_per_step": sum(r["model_flops"] for r in ranks) / len(step_time),
                      "hardware_flops_per_step": sum(r["hardware_flops"] for r in ranks) / len(step_time),
                      "head_rows": "masked"},
            "world_size": world, "torch_threads": [r["torch_threads"] for r in ranks],
            "fast_path": {"attention": pretrain_cfg.model.attention, "compile": pretrain_cfg.train.compile,
                          "fused_optimizer": pretrain_cfg.train.fused_optimizer,
                          "precision": pretrain_cfg.train.precision},
            "env": versions(),
        }
        peak = peak_rate(torch)
        measured = sum(step_time)
        model_flops = sum(r["model_flops"] for r in ranks)
        hw_flops = sum(r["hardware_flops"] for r in ranks)
        result["flops"].update(peak)
        result["flops"]["achieved_flops_per_s"] = model_flops / measured
        if peak["peak_flops"]:
            result["flops"]["mfu"] = model_flops / measured / (peak["peak_flops"] * world)
            result["flops"]["hfu"] = hw_flops / measured / (peak["peak_flops"] * world)
        write_json(out, result)
    built.monitor.close()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    sys.exit(run(cfg, args.out))


if __name__ == "__main__":
    main()
