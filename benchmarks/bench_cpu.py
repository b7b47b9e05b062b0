"""What every benchmark row says about the CPU it ran on: the model name, its vector extensions and threads.

    from bench_cpu import cpu_record
    row["cpu"] = cpu_record(threads=torch.get_num_threads())

Ratios between systems move with the CPU (the Trainer's full-vocabulary head gains more from AMX and AVX-512
than medtrain's masked-only head does), so a figure without its CPU cannot be compared with another. The record
comes from /proc/cpuinfo: the first processor's `model name`, `cpu family` and `model`, and its `flags`
filtered to the SIMD ones (SSE4, AVX, AVX2, FMA, F16C, AVX-512*, AVX-VNNI, AMX*; on ARM the `Features` line's
NEON/ASIMD/SVE ones). No torch import: the data benchmarks use it too.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

# The SIMD flags worth recording, as /proc/cpuinfo spells them (x86 `flags`, ARM `Features`).
_SIMD = re.compile(r"^(sse4_1|sse4_2|avx|avx2|fma|f16c|avx512.*|avx_vnni.*|avx_ne_convert|avx_ifma|amx.*|"
                   r"asimd.*|neon|sve.*|sme.*|bf16|i8mm)$")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's model name, family, model number and SIMD flags (in the order the kernel lists
    them), and how many processors the text lists."""
    first: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            processors += 1
        if processors <= 1 and key not in first:
            first[key] = value.strip()
    flags = (first.get("flags") or first.get("Features") or "").split()
    model_name = first.get("model name") or first.get("Model name") or first.get("Hardware")
    return {"model": model_name or None, "family": _int(first.get("cpu family")), "model_number": _int(first.get("model")),
            "simd": [flag for flag in flags if _SIMD.match(flag)], "processors": processors}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def cpu_record(threads: int | None = None, path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """This machine's CPU: model, family/model number, SIMD flags, logical CPUs, those usable by this process
    (affinity: a SLURM task or taskset may allow fewer) and `threads`, the compute threads the run used."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = {"model": platform.processor() or None, "family": None, "model_number": None, "simd": [],
                "processors": 0}
    info.pop("processors")
    return {**info, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "threads": threads}


def cpu_label(record: dict[str, Any]) -> str:
    """One line for tables: `Intel(R) Xeon(R) Processor (6/207; avx2, avx512f, amx_bf16 ...), 1 thread`."""
    simd = record.get("simd") or []
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "sve", "asimd") if f in simd]
    number = f"{record['family']}/{record['model_number']}" if record.get("family") is not None else ""
    inside = "; ".join(part for part in (number, ", ".join(shown or simd[:3])) if part)
    threads = record.get("threads")
    tail = f", {threads} thread{'s' if threads != 1 else ''}" if threads else ""
    return f"{record.get('model') or 'unknown CPU'}{f' ({inside})' if inside else ''}{tail}"
