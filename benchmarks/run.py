"""Run a benchmark matrix: each configuration in a fresh process, one JSON line per configuration.

    python benchmarks/run.py benchmarks/matrices/cpu-small.yaml            # the matrix
    python benchmarks/run.py MATRIX --find-max-batch [--rss-limit-mb N]    # largest micro-batch per stage, seq_len
    python benchmarks/run.py MATRIX --dry-run                              # list configurations and commands
    python benchmarks/run.py MATRIX --only hf --report                     # a subset, then the report

Results are appended to OUT/<matrix>-<host>-<date>.jsonl (OUT: benchmarks/results); `benchmarks/report.py`
turns that file into a markdown table and plots. A matrix file (see benchmarks/README.md):

    name: cpu-small
    defaults: {model: tiny, seq_len: 128, precision: fp32, warmup_steps: 3, measure_steps: 10}
    runs:                                   # blocks: the product of each block's lists; blocks add up
      - {zero: [0, 1, 2, 3], micro_batch: [4, 8]}
      - {system: [hf-padded, hf-grouped], micro_batch: 8}
    find_max_batch: {zero: [0, 3], seq_len: [128], start: 8, rss_limit_mb: 4000}
    scripts:                                # other benchmark scripts, run as they are (data.yaml)
      - {script: benchmarks/loader_bench.py, args: [--workers, 1, 2]}

Each configuration runs `benchmarks/worker.py` (medtrain) or `benchmarks/baseline_hf.py` (the Hugging Face
Trainer) in a new process: one `python` for one process, the `deepspeed` launcher for several on one node, `srun`
inside a SLURM allocation, or the matrix's `submit` command template (e.g. launchers/pretrain.py) for several
nodes. The benchmark data (the bundled sample corpora, packed per seq_len) is made once into benchmarks/.cache/.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import copy
import datetime
import difflib
import hashlib
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

from medtrain.errors import UserError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
WORKER = HERE / "worker.py"
BASELINE = HERE / "baseline_hf.py"
DS_CONFIGS = REPO / "ds_configs"

MBERT_VOCAB = 119_547  # bert-base-multilingual-cased
# BertConfig fields; the names are sizes, not checkpoints: weights are random, only the shapes matter.
MODELS: dict[str, dict[str, int]] = {
    "mini": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
SYSTEMS = ("medtrain", "hf-padded", "hf-grouped")
OFFLOADS = ("none", "optimizer", "all")  # all = optimizer and parameters (ZeRO-3)
PRECISIONS = ("fp32", "bf16", "fp16")
LAUNCHERS = ("local", "srun", "submit")

# Every axis of a configuration, with its default. A matrix's `defaults` and `runs` blocks may set any of them.
AXES: dict[str, Any] = {
    "system": "medtrain",         # medtrain | hf-padded (line by line) | hf-grouped (group_texts)
    "model": "tiny",              # a MODELS name, or a mapping of BertConfig fields
    "vocab": "sample",            # sample (the sample tokenizer's) | mbert (119,547) | a number
    "seq_len": 128,
    "micro_batch": 8,             # sequences per process per forward pass
    "grad_accum": 1,
    "zero": 2,                    # ZeRO stage 0-3 (HF baselines: none)
    "offload": "none",            # none | optimizer | all
    "precision": "fp32",          # fp32 | bf16 | fp16
    "activation_checkpointing": False,
    "procs": 1,                   # processes (GPUs) per node
    "nodes": 1,
    "launcher": "local",          # local (python / deepspeed) | srun | submit (the matrix's `submit` template)
    "threads": 0,                 # torch threads per process on CPU; 0: the usable cores / procs
    "num_workers": 1,             # DataLoader workers per process
    "warmup_steps": 3,
    "measure_steps": 10,
    "seed": 0,
    "lr": 1e-4,
    "hf_padding": "longest",      # hf-padded only: longest (collator pads per batch) | max_length (to seq_len)
    "rss_limit_mb": 0,            # a process whose RSS passes this is out of memory (0: no limit)
    "ds_config": None,            # a DeepSpeed JSON to use as is (default: from zero + offload)
}
MATRIX_KEYS = {"name", "description", "defaults", "runs", "find_max_batch", "scripts", "submit", "srun_args",
               "timeout_s", "data_scale", "repeat"}
SEARCH_KEYS = {"zero", "seq_len", "start", "limit", "step", "rss_limit_mb"}
HF_IGNORED = {"zero": None, "offload": "none", "ds_config": None}  # not applicable to the Trainer baseline


# ----------------------------------------------------------------------------- the matrix


def _unknown(keys: set[str], valid: set[str] | dict[str, Any], what: str, path: Path, line: int | None) -> None:
    for key in sorted(keys - set(valid)):
        close = difflib.get_close_matches(key, sorted(valid), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; valid: {', '.join(sorted(valid))}"
        raise UserError(f"unknown {what} {key!r}{hint}", path, line)


def load_matrix(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    from medtrain.config import read_yaml

    data, lines = read_yaml(Path(path))
    _unknown(set(data), MATRIX_KEYS, "matrix key", path, None)
    data.setdefault("name", Path(path).stem)
    return data, lines


def expand(matrix: dict[str, Any], path: Path = Path("<matrix>"), lines: dict[str, int] | None = None) -> list[dict]:
    """The matrix's configurations: defaults, then each `runs` block's product; duplicates collapse (first kept)."""
    lines = lines or {}
    defaults = dict(AXES)
    given = matrix.get("defaults") or {}
    _unknown(set(given), AXES, "axis", path, lines.get("defaults"))
    defaults.update(given)
    blocks = matrix.get("runs")
    if blocks is None:
        blocks = [{}] if matrix.get("defaults") else []
    if not isinstance(blocks, list):
        raise UserError("`runs` must be a list of blocks (mappings of axis: value or [values])", path,
                        lines.get("runs"))
    configs, seen = [], set()
    for i, block in enumerate(blocks):
        where = lines.get(f"runs.{i}")
        if not isinstance(block, dict):
            raise UserError("each `runs` block must be a mapping of axis: value or [values]", path, where)
        _unknown(set(block), AXES, "axis", path, where)
        keys = list(block)
        values = [v if isinstance(v, list) else [v] for v in block.values()]
        for combo in itertools.product(*values):
            cfg = normalize({**defaults, **dict(zip(keys, combo))}, path, where)
            sig = signature(cfg)
            if sig not in seen:
                seen.add(sig)
                configs.append(cfg)
    return configs


def normalize(cfg: dict[str, Any], path: Path = Path("<matrix>"), line: int | None = None) -> dict[str, Any]:
    """Check one configuration and fill what follows from it; UserError names the problem."""
    cfg = copy.deepcopy(cfg)

    def fail(message: str) -> None:
        raise UserError(f"{label(cfg)}: {message}", path, line)

    if cfg["system"] not in SYSTEMS:
        fail(f"system must be one of {', '.join(SYSTEMS)}, got {cfg['system']!r}")
    model = cfg["model"]
    if isinstance(model, str) and model not in MODELS:
        fail(f"model must be one of {', '.join(MODELS)} or a mapping of BertConfig fields, got {model!r}")
    if not isinstance(model, (str, dict)):
        fail("model must be a name or a mapping of BertConfig fields")
    vocab = cfg["vocab"]
    if not (vocab in ("sample", "mbert") or (isinstance(vocab, int) and vocab > 0)):
        fail(f"vocab must be sample, mbert or a positive number, got {vocab!r}")
    for key in ("seq_len", "micro_batch", "grad_accum", "procs", "nodes", "measure_steps"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            fail(f"{key} must be a positive integer, got {cfg[key]!r}")
    for key in ("warmup_steps", "threads", "num_workers", "seed"):
        if not isinstance(cfg[key], int) or cfg[key] < 0:
            fail(f"{key} must be a non-negative integer, got {cfg[key]!r}")
    if not 8 <= cfg["seq_len"] <= 512:
        fail(f"seq_len must be between 8 and 512 (BERT's positions), got {cfg['seq_len']}")
    if cfg["precision"] not in PRECISIONS:
        fail(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg['precision']!r}")
    if cfg["launcher"] not in LAUNCHERS:
        fail(f"launcher must be one of {', '.join(LAUNCHERS)}, got {cfg['launcher']!r}")
    if cfg["launcher"] == "local" and cfg["nodes"] > 1:
        fail("several nodes need launcher: srun or submit")
    if cfg["system"] == "hf-padded" and cfg["hf_padding"] is None:
        cfg["hf_padding"] = "longest"  # normalize() may see a configuration it already normalised
    if cfg["hf_padding"] not in ("longest", "max_length", None):
        fail(f"hf_padding must be longest or max_length, got {cfg['hf_padding']!r}")
    if not isinstance(cfg["activation_checkpointing"], bool):
        fail("activation_checkpointing must be true or false")
    if cfg["system"] != "medtrain":
        if cfg["procs"] * cfg["nodes"] != 1:
            fail("the Hugging Face baselines run one process (procs: 1, nodes: 1)")
        cfg.update(HF_IGNORED)
        if cfg["system"] == "hf-grouped":
            cfg["hf_padding"] = None
    else:
        cfg["hf_padding"] = None
        if cfg["zero"] not in (0, 1, 2, 3):
            fail(f"zero must be a ZeRO stage 0-3, got {cfg['zero']!r}")
        if cfg["offload"] not in OFFLOADS:
            fail(f"offload must be one of {', '.join(OFFLOADS)}, got {cfg['offload']!r}")
        if cfg["offload"] != "none" and cfg["zero"] == 0:
            fail("offload needs ZeRO stage 1, 2 or 3")
        if cfg["offload"] == "all" and cfg["zero"] != 3:
            fail("offloading parameters (offload: all) needs ZeRO stage 3")
    return cfg


def signature(cfg: dict[str, Any]) -> str:
    """A short hash of the resolved configuration (its identity in results files)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]


def label(cfg: dict[str, Any]) -> str:
    """A readable one-line name: system model/vocab s<seq> mb<micro> z<stage> precision procs..."""
    model = cfg.get("model")
    model = model if isinstance(model, str) else "custom"
    parts = [str(cfg.get("system")), f"{model}/{cfg.get('vocab')}", f"s{cfg.get('seq_len')}",
             f"mb{cfg.get('micro_batch')}"]
    if cfg.get("grad_accum", 1) != 1:
        parts.append(f"ga{cfg['grad_accum']}")
    if cfg.get("system") == "medtrain":
        parts.append(f"z{cfg.get('zero')}")
        if cfg.get("offload") not in (None, "none"):
            parts.append(f"off-{cfg['offload']}")
    elif cfg.get("hf_padding"):
        parts.append(f"pad-{cfg['hf_padding']}")
    parts.append(str(cfg.get("precision")))
    if cfg.get("activation_checkpointing"):
        parts.append("ckpt")
    parts.append(f"{cfg.get('nodes')}x{cfg.get('procs')}p")
    return " ".join(parts)


def model_config(cfg: dict[str, Any]) -> dict[str, Any]:
    fields = dict(MODELS[cfg["model"]]) if isinstance(cfg["model"], str) else dict(cfg["model"])
    fields.setdefault("max_position_embeddings", 512)
    return fields


# ----------------------------------------------------------------------------- data and DeepSpeed configs


def ensure_cache() -> Path:
    """benchmarks/.cache/, ignoring itself so git never sees data, builds or logs (however .gitignore is set)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    marker = CACHE / ".gitignore"
    if not marker.is_file():
        marker.write_text("# benchmark data, JIT builds and run logs (written by benchmarks/run.py)\n*\n",
                          encoding="utf-8")
    return CACHE


def sample_data(scale: float) -> Path:
    """The bundled sample corpora and tokenizer, written once per scale into the cache."""
    from medtrain.data.sample import write_sample_data

    out = CACHE / f"sample-s{scale:g}"
    if (out / "prepare.yaml").is_file():
        return out
    tmp = CACHE / f"sample-s{scale:g}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"writing the sample corpora (scale {scale:g}) to {out} ...", flush=True)
    write_sample_data(tmp, seed=0, scale=scale)
    # prepare.yaml names the folder it was written in: point it at the final one before publishing
    text = (tmp / "prepare.yaml").read_text(encoding="utf-8").replace(str(tmp), str(out))
    (tmp / "prepare.yaml").write_text(text, encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def shards_for(seq_len: int, scale: float) -> Path:
    """Packed shards of the sample corpora at this seq_len (`medtrain prepare`, once)."""
    from medtrain.config import load_config
    from medtrain.data.pack import PrepareConfig, prepare

    data = sample_data(scale)
    out = data / f"shards-{seq_len}"
    if not (out / "manifest.json").is_file():
        print(f"packing the sample corpora at seq_len {seq_len} ...", flush=True)
        prepare(load_config(PrepareConfig, data / "prepare.yaml", [f"seq_len={seq_len}", f"output_dir={out}"]))
    return out


def ds_config_for(cfg: dict[str, Any]) -> Path:
    """The shipped ds_configs/*.json for this stage and offload, or one derived from zero<N>.json into the cache."""
    if cfg.get("ds_config"):
        return Path(cfg["ds_config"]).resolve()
    stage, offload = cfg["zero"], cfg["offload"]
    shipped = {"none": f"zero{stage}.json", "optimizer": f"zero{stage}-offload.json" if stage == 2 else None,
               "all": "zero3-offload.json" if stage == 3 else None}[offload]
    if shipped and (DS_CONFIGS / shipped).is_file():
        return DS_CONFIGS / shipped
    ds = json.loads((DS_CONFIGS / f"zero{stage}.json").read_text(encoding="utf-8"))
    zero = ds.setdefault("zero_optimization", {"stage": stage})
    zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload == "all":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    out = CACHE / "ds_configs" / f"zero{stage}-offload-{offload}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ds, indent=2) + "\n", encoding="utf-8")
    return out


def resolve(cfg: dict[str, Any], scale: float) -> dict[str, Any]:
    """What the worker reads: the configuration plus absolute paths and the model's fields."""
    shards = shards_for(cfg["seq_len"], scale)
    vocab = MBERT_VOCAB if cfg["vocab"] == "mbert" else 0 if cfg["vocab"] == "sample" else int(cfg["vocab"])
    data = sample_data(scale)
    out = {**cfg, "model_config": model_config(cfg), "vocab_size": vocab, "shards": str(shards),
           "tokenizer": str(shards / "tokenizer"),
           "corpora": sorted(str(p) for p in (data / "corpora").glob("*.jsonl"))}
    if cfg["system"] == "medtrain":
        out["ds_config"] = str(ds_config_for(cfg))
    return out


# ----------------------------------------------------------------------------- running one configuration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def command(cfg: dict[str, Any], run_json: Path, out: Path, matrix: dict[str, Any]) -> list[str] | str:
    """The command line for one configuration (a string for the matrix's `submit` template, run by a shell)."""
    script = WORKER if cfg["system"] == "medtrain" else BASELINE
    args = [str(script), "--config", str(run_json), "--out", str(out)]
    if cfg["launcher"] == "srun":
        srun = ["srun", "--nodes", str(cfg["nodes"]), "--ntasks-per-node", str(cfg["procs"])]
        return [*srun, *[str(a) for a in matrix.get("srun_args", [])], sys.executable, *args]
    if cfg["launcher"] == "submit":
        template = matrix.get("submit")
        if not template:
            raise UserError("launcher: submit needs a `submit:` command template in the matrix")
        return template.format(python=shlex.quote(sys.executable), script=shlex.quote(str(script)),
                               config=shlex.quote(str(run_json)), out=shlex.quote(str(out)), nodes=cfg["nodes"],
                               procs=cfg["procs"], repo=shlex.quote(str(REPO)),
                               args=" ".join(shlex.quote(a) for a in args))
    if cfg["procs"] == 1:
        return [sys.executable, *args]
    deepspeed = Path(sys.executable).with_name("deepspeed")
    return [str(deepspeed), "--num_gpus", str(cfg["procs"]), "--master_port", str(_free_port()), *args]


def run_folder(work: Path, cfg: dict[str, Any], purpose: str = "matrix") -> Path:
    return work / f"{signature(cfg)}-{purpose}"


def run_one(cfg: dict[str, Any], matrix: dict[str, Any], work: Path, timeout: float, scale: float,
            purpose: str = "matrix", repeat: int = 0) -> dict[str, Any]:
    """Run one configuration in a fresh process; its result line (status ok, oom, timeout or error)."""
    sig = signature(cfg)
    folder = run_folder(work, cfg, purpose) if not repeat else run_folder(work, cfg, f"{purpose}-{repeat}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_json, out = folder / "run.json", folder / "result.json"
    resolved = resolve(cfg, scale)
    run_json.write_text(json.dumps(resolved, indent=1), encoding="utf-8")
    cmd = command(cfg, run_json, out, matrix)
    env = dict(os.environ)
    if not _cuda():
        env.setdefault("DS_ACCELERATOR", "cpu")
    elif cfg["system"] != "medtrain":
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: Trainer would wrap several in DataParallel
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # DeepSpeed JIT-builds its CPU ops (shared-memory all-reduce, CPU Adam) into TORCH_EXTENSIONS_DIR. The shared
    # default (~/.cache/torch_extensions) is rebuilt whenever processes with other build flags use it (1-2 minutes
    # each time on 2 cores), which would land inside a configuration's timing: keep the benchmarks' builds apart.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(CACHE / "torch_extensions"))
    started = time.perf_counter()
    status = None
    with open(folder / "log.txt", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            if cfg["launcher"] == "submit" and rc == 0:  # a submitting command may return before the job ends
                deadline = started + timeout
                while (not out.is_file() and not any(folder.glob("result.rank*.json"))
                       and time.perf_counter() < deadline):
                    time.sleep(10)
                if not out.is_file() and time.perf_counter() >= deadline:
                    status = "timeout"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status = None, "timeout"
    wall = time.perf_counter() - started
    row: dict[str, Any] = {"bench": "train", "matrix": matrix["name"], "id": sig, "name": label(cfg),
                           "purpose": purpose, "invocation": work.name, "repeat": repeat, "config": cfg,
                           "time": datetime.datetime.now().isoformat(timespec="seconds"),
                           "wall_s": round(wall, 1), "returncode": rc,
                           "command": cmd if isinstance(cmd, str) else shlex.join(cmd)}
    if out.is_file():
        row.update(json.loads(out.read_text(encoding="utf-8")))
        if rc not in (0, None) and row.get("status") == "ok":
            row["status"], row["error"] = "error", f"exit status {rc} after writing results"
        return row
    ranks = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("result.rank*.json"))]
    ooms = [r for r in ranks if r.get("status") == "oom"]
    tail = _tail(folder / "log.txt")
    if ooms:
        row.update(status="oom", oom=ooms)
    elif status == "timeout":
        row.update(status="timeout", error=f"no result within {timeout:.0f} s", log_tail=tail)
    elif "out of memory" in tail.lower() or rc in (-9, 137):
        row.update(status="oom", oom=[{"oom_kind": "killed" if rc in (-9, 137) else "log", "detail": tail[-500:]}])
    else:
        row.update(status="error", error=f"exit status {rc}", log_tail=tail)
    from worker import versions

    row["env"] = versions()
    return row


def _kill_group(proc: subprocess.Popen) -> None:
    """The configuration's whole process group (launcher, ranks, loader workers), which we started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


# ----------------------------------------------------------------------------- the largest micro-batch


def search_max_batch(fits, start: int, limit: int, step: int = 1) -> tuple[int, list[int]]:
    """The largest micro-batch in [1, limit] for which `fits(mb)` holds: doubling from `start`, then bisection
    (to within `step`). Assumes fitting is monotone. Returns (largest fitting or 0, micro-batches probed)."""
    probed: list[int] = []

    def probe(mb: int) -> bool:
        probed.append(mb)
        return fits(mb)

    lo, hi, mb = 0, None, max(1, min(start, limit))
    while True:
        if probe(mb):
            lo = mb
            if mb >= limit:
                break
            mb = min(mb * 2, limit)
        else:
            hi = mb
            break
    if hi is not None:
        while hi - lo > step:
            mid = (lo + hi) // 2
            if probe(mid):
                lo = mid
            else:
                hi = mid
    return lo, probed


def find_max_batch(matrix: dict[str, Any], base: dict[str, Any], results: Path, work: Path, timeout: float,
                   scale: float, rss_limit_mb: float | None) -> list[dict[str, Any]]:
    spec = dict(matrix.get("find_max_batch") or {})
    _unknown(set(spec) - set(AXES), SEARCH_KEYS, "find_max_batch key", Path(matrix["name"]), None)
    # a probe needs to reach the first optimizer step (Adam states appear there) and one more, not a timing
    axes = {"warmup_steps": 1, "measure_steps": 2,
            **{k: v for k, v in spec.items() if k in AXES and k not in SEARCH_KEYS}}
    stages = spec.get("zero", [0, 1, 2, 3])
    seq_lens = spec.get("seq_len", [base["seq_len"]])
    limit, start, step = int(spec.get("limit", 4096)), int(spec.get("start", 8)), int(spec.get("step", 1))
    rss = rss_limit_mb if rss_limit_mb is not None else spec.get("rss_limit_mb", 0)
    cuda = _cuda()
    if not cuda and not rss:
        raise UserError("on CPU, --find-max-batch needs an RSS limit (--rss-limit-mb or find_max_batch.rss_limit_mb):"
                        " CPU memory has no out-of-memory error in practice")
    rows = []
    for stage in stages if isinstance(stages, list) else [stages]:
        for seq_len in seq_lens if isinstance(seq_lens, list) else [seq_lens]:
            probes = []

            def fits(mb: int) -> bool:
                cfg = normalize({**base, **axes, "zero": stage, "seq_len": seq_len, "micro_batch": mb,
                                 "rss_limit_mb": 0 if cuda else rss})
                row = run_one(cfg, matrix, work, timeout, scale, purpose="max_batch_probe")
                append(results, row)
                probes.append({"micro_batch": mb, "status": row["status"], **_memory_brief(row),
                               "tokens_per_s": (row.get("tokens_per_s") or {}).get("median")})
                print(f"  zero {stage} seq_len {seq_len} micro-batch {mb}: {row['status']}", flush=True)
                return row["status"] == "ok"

            best, _ = search_max_batch(fits, start, limit, step)
            template = normalize({**base, **axes, "zero": stage, "seq_len": seq_len})
            row = {"bench": "max_batch", "matrix": matrix["name"], "name": label(template), "config": template,
                   "zero": stage, "seq_len": seq_len, "max_micro_batch": best, "limit": limit,
                   "capped": best >= limit, "rss_limit_mb": None if cuda else rss,
                   "criterion": "CUDA out of memory" if cuda else f"RSS of any rank above {rss} MiB",
                   "probes": probes, "time": datetime.datetime.now().isoformat(timespec="seconds")}
            append(results, row)
            rows.append(row)
            capped = " (the limit)" if best >= limit else ""
            print(f"zero {stage} seq_len {seq_len}: largest micro-batch {best}{capped}")
    return rows


def _memory_brief(row: dict[str, Any]) -> dict[str, Any]:
    ranks = (row.get("memory") or {}).get("per_rank") or []
    out: dict[str, Any] = {}
    if ranks:
        out["rss_peak_mb"] = max(r.get("rss_peak_mb", 0) for r in ranks)
        if "cuda_max_reserved_mb" in ranks[0]:
            out["cuda_max_reserved_mb"] = max(r["cuda_max_reserved_mb"] for r in ranks)
    return out


# ----------------------------------------------------------------------------- other scripts (data.yaml)


def run_scripts(matrix: dict[str, Any], results: Path, timeout: float) -> None:
    for item in matrix.get("scripts") or []:
        script = REPO / item["script"]
        args = [str(a) for a in item.get("args", [])]
        cmd = [sys.executable, str(script), *args]
        print(f"$ {shlex.join(cmd)}", flush=True)
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
        try:
            rc = proc.wait(timeout=item.get("timeout_s", timeout))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        append(results, {"bench": "script", "matrix": matrix["name"], "script": item["script"], "args": args,
                         "returncode": rc, "status": "ok" if rc == 0 else "timeout" if rc is None else "error",
                         "wall_s": round(time.perf_counter() - started, 1),
                         "results": "the script appends its own lines to "
                                    "benchmarks/results/<bench>-<host>-<date>.jsonl",
                         "time": datetime.datetime.now().isoformat(timespec="seconds")})


# ----------------------------------------------------------------------------- main


def append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def results_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}-{socket.gethostname()}-{datetime.date.today().isoformat()}.jsonl"


def _brief(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('error') or (row.get('oom') or [{}])[0].get('detail', '')}"[:160]
    tps = row["tokens_per_s"]
    return (f"{tps['median']:>10,.0f} tokens/s (p10-p90 {tps['p10']:,.0f}-{tps['p90']:,.0f}), "
            f"step {row['step_time_s']['median'] * 1e3:,.0f} ms, data wait {row['data_wait_fraction']:.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("matrix", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--find-max-batch", action="store_true",
                        help="search the largest micro-batch per ZeRO stage and seq_len instead of running the matrix")
    parser.add_argument("--rss-limit-mb", type=float, default=None, help="CPU: the RSS per process that counts as OOM")
    parser.add_argument("--only", action="append", default=[],
                        help="run configurations whose name or id contains this (repeatable; any matches)")
    parser.add_argument("--dry-run", action="store_true", help="list the configurations and their commands")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per configuration (matrix: timeout_s)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="run the whole list N times, round robin, so load from other jobs hits every "
                             "configuration alike; the report takes the median run (matrix: repeat, default 1)")
    parser.add_argument("--report", action="store_true", help="run benchmarks/report.py on the results afterwards")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    ensure_cache()
    matrix, lines = load_matrix(args.matrix)
    configs = expand(matrix, args.matrix, lines)
    if args.only:
        configs = [c for c in configs if any(o in label(c) or o in signature(c) for o in args.only)]
    timeout = float(args.timeout or matrix.get("timeout_s", 900))
    scale = float(matrix.get("data_scale", 1.0))
    results = results_path(args.out, matrix["name"])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = CACHE / "runs" / f"{matrix['name']}-{stamp}"

    if args.dry_run:
        for cfg in configs:
            folder = run_folder(work, cfg)
            cmd = command(cfg, folder / "run.json", folder / "result.json", matrix)
            print(f"{signature(cfg)}  {label(cfg)}\n    {cmd if isinstance(cmd, str) else shlex.join(cmd)}")
        if matrix.get("find_max_batch"):
            print(f"find_max_batch: {matrix['find_max_batch']}")
        for item in matrix.get("scripts") or []:
            print(f"script: {item['script']} {' '.join(map(str, item.get('args', [])))}")
        return 0

    print(f"{matrix['name']}: results appended to {results}; logs in {work}", flush=True)
    if args.find_max_batch:
        if not matrix.get("find_max_batch"):
            raise UserError("this matrix has no find_max_batch section", args.matrix)
        base = normalize({**AXES, **(matrix.get("defaults") or {}), "system": "medtrain"}, args.matrix)
        find_max_batch(matrix, base, results, work, timeout, scale, args.rss_limit_mb)
    else:
        run_scripts(matrix, results, timeout)
        total = time.perf_counter()
        repeats = int(args.repeat or matrix.get("repeat", 1))
        for repeat in range(repeats):
            for i, cfg in enumerate(configs, 1):
                print(f"[{i}/{len(configs)}{f' run {repeat + 1}/{repeats}' if repeats > 1 else ''}] {label(cfg)}",
                      flush=True)
                row = run_one(cfg, matrix, work, timeout, scale, repeat=repeat)
                append(results, row)
                print(f"    {_brief(row)}  ({row['wall_s']:.0f} s)", flush=True)
        if configs:
            print(f"{len(configs)} configurations x {repeats} in {time.perf_counter() - total:.0f} s; "
                  f"results in {results}")
    if args.report:
        subprocess.run([sys.executable, str(HERE / "report.py"), str(results)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
