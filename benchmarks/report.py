"""Markdown tables and PNG plots from benchmark results (the JSONL files benchmarks/run.py appends to).

    python benchmarks/report.py benchmarks/results/cpu-small-HOST-DATE.jsonl [MORE.jsonl ...] [--out DIR]

Writes DIR/report.md (default DIR: benchmarks/reports/<first file's name>/) with:
  * every configuration: tokens/s and samples/s (median over the measured steps, p10-p90 spread), step time,
    the share of step time spent waiting for data, MFU on GPUs, peak memory beside DeepSpeed's estimate;
  * medtrain against the Hugging Face Trainer baselines on the same model, data, batch and hardware, as ratios;
  * the largest micro-batch per ZeRO stage and seq_len (run.py --find-max-batch);
  * the hardware and software the numbers came from;
and two plots: throughput_vs_micro_batch.png (one line per ZeRO stage) and memory_vs_estimate.png.
When a configuration was run more than once, its last result is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPORTS = HERE / "reports"
# Configuration axes that must match for a medtrain run and a baseline run to be compared.
SAME_FOR_BASELINE = ("model", "vocab", "seq_len", "micro_batch", "grad_accum", "precision",
                     "activation_checkpointing", "attention", "threads", "num_workers", "measure_steps")
MiB = 1 << 20


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """All result lines; a configuration run several times keeps the runs of its latest invocation, and of those
    (run.py --repeat) the one with the median tokens/s, marked with how many runs there were."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        if row.get("bench") == "train":
            key = ("train", row.get("id"), row.get("purpose"), row.get("config", {}).get("micro_batch"))
        elif row.get("bench") == "max_batch":
            key = ("max_batch", row.get("name"), row.get("zero"), row.get("seq_len"))
        else:
            key = ("other", i)
        group = groups.setdefault(key, [])
        if group and group[-1].get("invocation") != row.get("invocation"):
            group.clear()  # a later invocation replaces an earlier one
        group.append(row)
    out = []
    for group in groups.values():
        ok = sorted((r for r in group if r.get("status") == "ok"), key=lambda r: tokens(r) or 0)
        chosen = dict(ok[(len(ok) - 1) // 2] if ok else group[-1])
        if len(group) > 1:
            chosen["runs"] = len(group)
            chosen["run_medians"] = [tokens(r) for r in group]
        out.append(chosen)
    return out


# ----------------------------------------------------------------------------- figures of one row


def tokens(row: dict[str, Any]) -> float | None:
    return (row.get("tokens_per_s") or {}).get("median")


def measured_memory_mb(row: dict[str, Any]) -> tuple[float | None, str]:
    """The memory to set beside the model-states estimate, per GPU or per rank: CUDA max allocated on GPUs;
    on CPU the peak RSS above the RSS right after imports and the process group (what the run itself added)."""
    ranks = (row.get("memory") or {}).get("per_rank") or []
    if not ranks:
        return None, ""
    if "cuda_max_allocated_mb" in ranks[0]:
        return max(r["cuda_max_allocated_mb"] for r in ranks), "CUDA max allocated"
    return max(r["rss_peak_mb"] - r.get("rss_base_mb", 0.0) for r in ranks), "peak RSS - RSS after imports"


def layout(row: dict[str, Any]) -> tuple[int, str]:
    """ZeRO stage and offload of a medtrain row: beside its config (read from its DeepSpeed JSON by run.py), or
    inside it in results written before the matrices named the JSON."""
    config = row["config"]
    return row.get("zero", config.get("zero")), row.get("offload", config.get("offload", "none"))


def estimate_mb(row: dict[str, Any], which: str) -> float | None:
    """DeepSpeed's (`ds`) or our (`analytic`) model-states estimate per GPU; on CPU per rank, where the host's
    share (per node) is divided among the node's ranks and added, since device memory is host memory there."""
    est = ((row.get("memory") or {}).get("estimate") or {}).get(which)
    if not est:
        return None
    on_gpu = bool((row.get("env") or {}).get("gpus"))
    procs = row.get("config", {}).get("procs", 1)
    total = est["device"] + (0 if on_gpu else est["host"] / procs)
    return total / MiB


def peak_memory_text(row: dict[str, Any]) -> str:
    ranks = (row.get("memory") or {}).get("per_rank") or []
    if not ranks:
        return "-"
    if "cuda_max_allocated_mb" in ranks[0]:
        alloc = max(r["cuda_max_allocated_mb"] for r in ranks)
        reserved = max(r["cuda_max_reserved_mb"] for r in ranks)
        return f"{alloc / 1024:.1f} / {reserved / 1024:.1f} GiB"
    return " / ".join(f"{r['rss_peak_mb']:.0f}" for r in ranks) + " MiB"


def _fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


# ----------------------------------------------------------------------------- tables


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def configurations_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for row in rows:
        tps, sps, step = row.get("tokens_per_s") or {}, row.get("samples_per_s") or {}, row.get("step_time_s") or {}
        flops = row.get("flops") or {}
        measured, _ = measured_memory_mb(row)
        status = row.get("status", "?")
        if status == "oom":
            status = "**OOM** " + ((row.get("oom") or [{}])[0].get("oom_kind") or "")
        elif status != "ok":
            status = f"**{status}**"
        name = row.get("name", "?") + (f" (median of {row['runs']} runs)" if row.get("runs") else "")
        body.append([
            name, status,
            _fmt(tps.get("median")), f"{_fmt(tps.get('p10'))} - {_fmt(tps.get('p90'))}" if tps else "-",
            _fmt(sps.get("median"), ",.1f"), _fmt(step.get("median") and step["median"] * 1e3, ",.0f"),
            _fmt(row.get("data_wait_fraction") and row["data_wait_fraction"] * 100, ".1f", "%"),
            _fmt(flops.get("mfu") and flops["mfu"] * 100, ".1f", "%") if flops.get("mfu") else "-",
            peak_memory_text(row), _fmt(measured), _fmt(estimate_mb(row, "ds")), _fmt(estimate_mb(row, "analytic")),
        ])
    return table(["configuration", "status", "tokens/s", "p10 - p90", "samples/s", "step ms", "data wait", "MFU",
                  "peak memory per rank", "added MiB", "DS estimate MiB", "our estimate MiB"], body)


def baseline_pairs(rows: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(medtrain row, HF row) pairs on the same model, data, batch and hardware (one process, on the same host)."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("bench") == "train" and r.get("purpose") == "matrix"]
    pairs = []
    for hf in (r for r in ok if r["config"]["system"] != "medtrain"):
        for med in (r for r in ok if r["config"]["system"] == "medtrain"):
            c, h = med["config"], hf["config"]
            same = all(c.get(k) == h.get(k) for k in SAME_FOR_BASELINE)
            if same and c["procs"] * c["nodes"] == 1 and (med.get("env") or {}).get("host") == \
                    (hf.get("env") or {}).get("host"):
                pairs.append((med, hf))
    return pairs


def baseline_table(rows: list[dict[str, Any]]) -> str:
    pairs = baseline_pairs(rows)
    if not pairs:
        return "_No medtrain configuration matched a baseline run (same model, vocab, seq_len, micro-batch, " \
               "precision, one process)._"
    body = []
    for med, hf in pairs:
        ratio = tokens(med) / tokens(hf) if tokens(hf) else None
        overall = (med["tokens_per_s_overall"] / hf["tokens_per_s_overall"]) if hf.get("tokens_per_s_overall") else None
        runs = f" ({med.get('runs', 1)} / {hf.get('runs', 1)} runs)" if med.get("runs") or hf.get("runs") else ""
        per_run = "-"
        m_runs, h_runs = med.get("run_medians") or [], hf.get("run_medians") or []
        if len(m_runs) == len(h_runs) > 1 and all(m_runs) and all(h_runs):
            ratios = [m / h for m, h in zip(m_runs, h_runs)]  # run k of each: neighbours in time (round robin)
            per_run = ", ".join(f"{r:.2f}" for r in ratios)
        body.append([med["name"] + runs, hf["config"]["system"] + (f" ({hf['config']['hf_padding']})"
                                                             if hf["config"].get("hf_padding") else ""),
                     _fmt(tokens(med)), _fmt(tokens(hf)),
                     _fmt(hf.get("padding_fraction") and hf["padding_fraction"] * 100, ".0f", "%"),
                     f"**{ratio:.2f}x**" if ratio else "-", _fmt(overall, ".2f", "x"), per_run])
    return table(["medtrain configuration", "baseline", "medtrain tokens/s", "baseline tokens/s",
                  "baseline padding", "ratio (medians)", "ratio (overall)", "ratio per run"], body)


def max_batch_table(rows: list[dict[str, Any]]) -> str:
    found = [r for r in rows if r.get("bench") == "max_batch"]
    if not found:
        return ""
    body = []
    for r in found:
        probes = ", ".join(f"{p['micro_batch']}:{'ok' if p['status'] == 'ok' else p['status']}" for p in r["probes"])
        best = f"{r['max_micro_batch']}{' (limit)' if r.get('capped') else ''}"
        body.append([r["name"].replace(f" mb{r['config']['micro_batch']}", ""), str(r["zero"]), str(r["seq_len"]),
                     best, r["criterion"], probes])
    return table(["configuration", "ZeRO", "seq_len", "largest micro-batch", "out of memory means", "probes"], body)


def environment(rows: list[dict[str, Any]]) -> str:
    envs = {}
    for r in rows:
        env = r.get("env")
        if env:
            envs[(env.get("host"), env.get("gpu"))] = env
    lines = []
    for env in envs.values():
        hw = (f"{env.get('cpu')} ({env.get('cpus_usable')} of {env.get('cpus')} cores usable), "
              f"{env.get('ram_gb')} GiB RAM")
        if env.get("gpu"):
            hw += (f"; {env['gpus']} x {env['gpu']} ({env.get('gpu_memory_gb')} GiB), CUDA {env.get('cuda')}, "
                   f"driver {env.get('driver')}")
        sw = ", ".join(f"{k} {env.get(k)}" for k in ("python", "torch", "deepspeed", "transformers", "accelerate",
                                                      "datasets", "numpy") if env.get(k))
        lines.append(f"- **{env.get('host')}**: {hw}. {sw}. git {env.get('git')}.")
    peaks = {(r.get("flops") or {}).get("peak_device"): (r.get("flops") or {}).get("peak_flops") for r in rows}
    peaks = {k: v for k, v in peaks.items() if k}
    if peaks:
        lines.append("- MFU against the dense bf16 peak: " + ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s"
                                                                         for k, v in peaks.items()) + ".")
    else:
        lines.append("- No GPU: MFU is not given (no meaningful peak rate for these CPUs); achieved model FLOP/s "
                     "are in the JSON lines.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots


def _series_key(cfg: dict[str, Any]) -> tuple:
    return (cfg["model"] if isinstance(cfg["model"], str) else "custom", cfg["vocab"], cfg["seq_len"],
            cfg["precision"], cfg["nodes"], cfg["procs"])


def plot_throughput(rows: list[dict[str, Any]], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = [r for r in rows if r.get("bench") == "train" and r.get("purpose") == "matrix"
           and r["config"]["system"] == "medtrain" and r.get("status") == "ok"]
    panels: dict[tuple, dict[str, list[tuple[int, dict]]]] = defaultdict(lambda: defaultdict(list))
    for r in med:
        c, (zero, offload) = r["config"], layout(r)
        line = f"ZeRO-{zero}" + (f" offload {offload}" if offload != "none" else "") + \
               (" ckpt" if c["activation_checkpointing"] else "")
        panels[_series_key(c)][line].append((c["micro_batch"], r))
    panels = {k: v for k, v in panels.items() if any(len(p) > 1 for p in v.values()) or len(v) > 1}
    if not panels:
        return None
    n = len(panels)
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(5.2 * cols, 3.8 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (key, lines) in zip(axes.flat, sorted(panels.items(), key=str)):
        for name, points in sorted(lines.items()):
            points.sort(key=lambda p: p[0])
            xs = [p[0] for p in points]
            ys = [tokens(p[1]) for p in points]
            lo = [y - p[1]["tokens_per_s"]["p10"] for y, p in zip(ys, points)]
            hi = [p[1]["tokens_per_s"]["p90"] - y for y, p in zip(ys, points)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        model, vocab, seq_len, precision, nodes, procs = key
        ax.set_title(f"{model}/{vocab} seq {seq_len} {precision} {nodes}x{procs} proc", fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("micro-batch per process")
        ax.set_ylabel("tokens/s (median, p10-p90)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = out / "throughput_vs_micro_batch.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(rows: list[dict[str, Any]], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = [r for r in rows if r.get("bench") == "train" and r.get("purpose") == "matrix"
           and r["config"]["system"] == "medtrain" and r.get("status") == "ok"]
    med.sort(key=lambda r: (*layout(r), str(_series_key(r["config"])),
                            r["config"]["micro_batch"]))
    if not med:
        return None
    names = [r["name"].replace("medtrain ", "") for r in med]
    measured = [measured_memory_mb(r)[0] or 0 for r in med]
    ds = [estimate_mb(r, "ds") or 0 for r in med]
    ours = [estimate_mb(r, "analytic") or 0 for r in med]
    what = measured_memory_mb(med[0])[1]
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(med) + 2), 4.8))
    xs = range(len(med))
    width = 0.28
    ax.bar([x - width for x in xs], measured, width, label=f"measured ({what})")
    ax.bar(list(xs), ds, width, label="DeepSpeed estimate (model states; none for ZeRO-0)")
    ax.bar([x + width for x in xs], ours, width, label="analytic estimate (model states, run's precision)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("MiB per rank" if "RSS" in what else "MiB per GPU")
    ax.set_title("Memory per ZeRO stage: measured against the model-states estimates")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "memory_vs_estimate.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main


def write_report(paths: list[Path], out: Path, note: str | None = None) -> Path:
    rows = load(paths)
    out.mkdir(parents=True, exist_ok=True)
    train = [r for r in rows if r.get("bench") == "train" and r.get("purpose") == "matrix"]
    scripts = [r for r in rows if r.get("bench") == "script"]
    throughput_png, memory_png = plot_throughput(rows, out), plot_memory(rows, out)
    measure = sorted({r["config"]["measure_steps"] for r in train}) if train else []
    parts = [f"# Benchmark report: {', '.join(p.name for p in paths)}", "",
             f"{len(train)} configurations, each in a fresh process; figures over {measure} measured steps after "
             "warm-up. tokens/s is the median of per-step rates (all processes together; real tokens, padding "
             "excluded), with the 10th-90th percentile spread. *peak memory*: CUDA max allocated / reserved per "
             "GPU, or peak RSS of each rank's main process on CPU. *added MiB*: the figure set beside the "
             "model-states estimates (on CPU, peak RSS minus the RSS after imports; it includes activations "
             "and DeepSpeed's communication buckets, which the estimates leave out).", ""]
    if note:
        parts[2:2] = [f"> {note}", ""]
    loads = [r["env"]["load_average"][0] for r in train if (r.get("env") or {}).get("load_average")]
    if loads:
        parts += [f"1-minute load average at the end of the runs: {min(loads):.1f} to {max(loads):.1f} "
                  f"(on {train[0]['env'].get('cpus_usable')} usable cores).", ""]
    if train:
        parts += ["## Configurations", "", configurations_table(train), ""]
        parts += ["## medtrain against the Hugging Face Trainer", "",
                  "Same model shape, corpora, tokenizer, micro-batch, precision, threads and hardware. The "
                  "baselines use BertForMaskedLM (vocabulary projection on every position) with "
                  "DataCollatorForLanguageModeling; hf-padded is line by line, hf-grouped concatenates and cuts "
                  "into seq_len blocks. Ratio > 1: medtrain is faster.", "", baseline_table(rows), ""]
    mb = max_batch_table(rows)
    if mb:
        parts += ["## Largest micro-batch", "", mb, ""]
    if scripts:
        parts += ["## Other benchmark scripts", "",
                  table(["script", "arguments", "status", "seconds"],
                        [[s["script"], " ".join(s["args"]), s["status"], f"{s['wall_s']:.0f}"] for s in scripts]),
                  "", "Their results are in their own files (benchmarks/results/prepare-*.jsonl, loader-*.jsonl).", ""]
    if throughput_png:
        parts += ["## Throughput against micro-batch", "", f"![throughput]({throughput_png.name})", ""]
    if memory_png:
        parts += ["## Memory against DeepSpeed's estimate", "", f"![memory]({memory_png.name})", ""]
    parts += ["## Hardware and software", "", environment(rows), ""]
    flops = next(((r.get("flops") or {}).get("formula") for r in train if r.get("flops")), None)
    if flops:
        parts += ["## Model FLOPs", "", f"`{flops}` (benchmarks/flops.py).", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/reports/<name>)")
    parser.add_argument("--note", default=None, help="a line to print under the title (e.g. how the machine was used)")
    args = parser.parse_args(argv)
    missing = [p for p in args.results if not p.is_file()]
    if missing:
        print(f"error: no such results file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    out = args.out or REPORTS / args.results[0].stem
    path = write_report(args.results, out, args.note)
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
