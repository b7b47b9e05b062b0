"""Fine-tuning against the Hugging Face Trainer: tokens/s, seconds per epoch, peak memory and test F1 of both.

    python benchmarks/finetune_bench.py benchmarks/matrices/finetune-cpu.yaml [--json OUT.json] [--repeat N]
    python benchmarks/finetune_bench.py MATRIX --only screening --repeat 1     # a subset (name or id contains ...)
    python benchmarks/finetune_bench.py MATRIX --dry-run                      # the configurations and commands

Per configuration (task x model x max_length x ...) and repeat, medtrain and then the Trainer each run in a
fresh process (`benchmarks/finetune_worker.py`), interleaved over the repeats (medtrain, trainer, medtrain,
trainer, ...) so load from other jobs hits both alike. Both fine-tune the same model folder on the same sequences
(medtrain's readers and tokenization) with the same epochs, batch size, learning rate, max_length and seed. One
JSON line per run and one per configuration (medians over the repeats, ratios medtrain / Trainer) are appended
to OUT/<matrix>-<host>-<date>.jsonl (OUT: benchmarks/results); --json also writes them as one JSON list,
--markdown the table. A matrix (benchmarks/README.md, "Fine-tuning"):

    name: finetune-cpu
    repeat: 3
    defaults: {model: tiny, epochs: 3, batch_size: 16, lr: 1.0e-3, max_length: 128, threads: 1}
    runs:
      - {task: ner}                                  # the sample's Spanish BRAT corpus
      - {task: screening, model: mini}               # the sample's Dutch notes

Model folders named by size (run.py's MODELS, or BertConfig fields) are built once from the config with random
weights and the sample tokenizer, saved as a Hugging Face folder in benchmarks/.cache/finetune-models/; a path
names an existing folder (a pretraining export) instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import threading
import time
from typing import Any, Literal

import yaml

import run as bench
from bench_cpu import cpu_label, cpu_record
from medtrain.config import build_config, read_yaml
from medtrain.errors import UserError
from prepare_bench import descendants
from worker import proc_status_kb

HERE = Path(__file__).resolve().parent
WORKER = HERE / "finetune_worker.py"
SYSTEMS = ("medtrain", "trainer")
LANGUAGE = {"ner": "es", "screening": "nl"}  # the sample's BRAT corpus (PharmaCoNER-shaped), its Dutch notes


@dataclasses.dataclass
class Axes:
    """One configuration; a matrix's `defaults` and `runs` blocks may set any field."""

    task: Literal["ner", "screening"] = "ner"
    model: str | dict[str, Any] = "tiny"
    """run.py's MODELS name (mini, tiny, base, large), a mapping of BertConfig fields, or a Hugging Face folder."""
    vocab: int | str = "sample"
    """Built models: sample (the sample tokenizer's), mbert (119,547 embedding rows) or a number."""
    language: str = ""
    """Which of the sample's languages (default: es for ner, nl for screening)."""
    max_length: int = 128
    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-5
    seed: int = 0
    threads: int = 1
    """Torch threads per process (0: the usable cores)."""
    train_docs: int = 0
    """Train on the first N training documents (NER) or notes (screening) only; 0: all."""
    bootstrap: int = 200
    """eval.bootstrap of medtrain's test report (scoring only; not timed)."""
    hf_bf16: bool = False
    """The Trainer's --bf16 (its default is fp32; medtrain picks its own precision)."""
    overrides: list[str] = dataclasses.field(default_factory=list)
    """medtrain only: `k=v` overrides of its fine-tuning config (e.g. a fast-path switch); default none."""

    def __post_init__(self) -> None:
        self.language = self.language or LANGUAGE[self.task]
        for key in ("max_length", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        if min(self.threads, self.train_docs, self.seed) < 0 or self.bootstrap < 1:
            raise ValueError("threads, train_docs and seed must be >= 0 and bootstrap >= 1")
        if not (self.vocab in ("sample", "mbert") or (isinstance(self.vocab, int) and self.vocab > 0)):
            raise ValueError(f"vocab must be sample, mbert or a positive number, got {self.vocab!r}")


@dataclasses.dataclass
class Matrix:
    name: str = ""
    """Default: the file's name."""
    description: str = ""
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    runs: list[dict[str, Any]] | None = None
    """Blocks of axis: value or [values]; each block is the product of its lists (default: the defaults alone)."""
    timeout_s: float = 900
    """Per run; past it the run's process group is killed (status timeout)."""
    data_scale: float = 1.0
    """Of the sample data (medtrain sample-data --scale)."""
    repeat: int = 3


def load_matrix(path: Path) -> tuple[Matrix, list[dict[str, Any]]]:
    """The matrix and its configurations: defaults, then each block's product; duplicates collapse."""
    data, lines = read_yaml(Path(path))
    matrix = build_config(Matrix, data, Path(path), lines)
    matrix.name = matrix.name or Path(path).stem
    configs, seen = [], set()
    for i, block in enumerate(matrix.runs if matrix.runs is not None else [{}]):
        keys = list(block)
        for combo in itertools.product(*[v if isinstance(v, list) and k != "overrides" else [v]
                                         for k, v in block.items()]):
            where = {k: lines.get(f"runs.{i}.{k}") or lines.get(f"defaults.{k}", 0) for k in {*matrix.defaults, *keys}}
            cfg = dataclasses.asdict(build_config(Axes, {**matrix.defaults, **dict(zip(keys, combo))}, Path(path),
                                                  {k: v for k, v in where.items() if v}))
            if bench.signature(cfg) not in seen:
                seen.add(bench.signature(cfg))
                configs.append(cfg)
    return matrix, configs


def label(cfg: dict[str, Any]) -> str:
    model = cfg["model"] if isinstance(cfg["model"], str) and cfg["model"] in bench.MODELS else \
        Path(cfg["model"]).name if isinstance(cfg["model"], str) else "custom"
    parts = [cfg["task"], cfg["language"], f"{model}/{cfg['vocab']}", f"len{cfg['max_length']}",
             f"bs{cfg['batch_size']}", f"{cfg['epochs']}ep", f"{cfg['threads'] or 'all'}t"]
    if cfg["train_docs"]:
        parts.append(f"{cfg['train_docs']}docs")
    if cfg["hf_bf16"]:
        parts.append("hf-bf16")
    parts += cfg["overrides"]
    return " ".join(parts)


# ----------------------------------------------------------------------------- inputs: model folder, data


def model_folder(cfg: dict[str, Any], sample: Path) -> Path:
    """A Hugging Face folder: the matrix's path, or a BERT of the named size with random weights (seed 0) and
    the sample tokenizer, built once per (fields, vocabulary)."""
    if isinstance(cfg["model"], str) and cfg["model"] not in bench.MODELS:
        path = Path(cfg["model"]).expanduser()
        path = path if path.is_absolute() else bench.REPO / path
        if not (path / "config.json").is_file():
            raise UserError(f"model {cfg['model']!r}: neither a size ({', '.join(bench.MODELS)}) nor a Hugging Face "
                            "folder (no config.json)")
        return path
    fields = bench.model_config(cfg)
    vocab = bench.MBERT_VOCAB if cfg["vocab"] == "mbert" else 0 if cfg["vocab"] == "sample" else int(cfg["vocab"])
    from medtrain.data.tokenizer import fingerprint, load_tokenizer

    key = {"fields": fields, "vocab": vocab, "tokenizer": fingerprint(sample / "tokenizer")}
    out = bench.CACHE / "finetune-models" / bench.signature(key)
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = load_tokenizer(sample / "tokenizer")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(0)
    config = BertConfig(**fields, vocab_size=max(vocab, len(tokenizer)), pad_token_id=tokenizer.pad_token_id)
    BertForMaskedLM(config).save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def data_section(cfg: dict[str, Any], sample: Path) -> dict[str, Any]:
    """The fine-tuning config's `data` for this task and language of the sample data (train cut to train_docs)."""
    lang, n = cfg["language"], cfg["train_docs"]
    if cfg["task"] == "ner":
        root = sample / "ner" / lang
        if not (root / "train").is_dir():
            raise UserError(f"the sample data has no BRAT NER corpus for {lang} ({root}/train)")
        train = root / "train"
        if n:
            def first_documents(src: Path, dst: Path) -> None:
                (dst / "train").mkdir()
                for text in sorted(src.glob("*.txt"))[:n]:
                    for path in (text, text.with_suffix(".ann")):
                        shutil.copy(path, dst / "train")

            train = _subset(train, n, first_documents) / "train"
        return {"format": "brat", "train": str(train), "dev": str(root / "dev"), "test": {lang: str(root / "test")}}
    root = sample / "screening" / lang
    if not (root / "train.jsonl").is_file():
        raise UserError(f"the sample data has no screening notes for {lang} ({root}/train.jsonl)")
    train = root / "train.jsonl"
    if n:
        def first_lines(src: Path, dst: Path) -> None:
            with open(src, encoding="utf-8") as f:
                (dst / "train.jsonl").write_text("".join(itertools.islice(f, n)), encoding="utf-8")

        train = _subset(train, n, first_lines) / "train.jsonl"
    return {"format": "jsonl", "train": str(train), "dev": str(root / "dev.jsonl"),
            "test": {lang: str(root / "test.jsonl")}}


def _subset(src: Path, n: int, write) -> Path:
    """A folder (made once, named after src's language, as medtrain names a split's language after the folder
    holding it) into which `write(src, folder)` wrote the first n training documents of src."""
    from medtrain.io import sha256_path

    out = bench.CACHE / "finetune-data" / bench.signature({"src": sha256_path(src), "n": n}) / src.parent.name
    if not out.is_dir():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(src, tmp)
        os.replace(tmp, out)
    return out


def finetune_config(cfg: dict[str, Any], model: Path, data: dict[str, Any], out: Path, cache: Path) -> dict:
    """medtrain's fine-tuning config for one run: the config's defaults apart from the shared settings."""
    return {"output_dir": str(out), "task": cfg["task"], "model": str(model), "data": data,
            "train": {"epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"], "seed": cfg["seed"],
                      "max_length": cfg["max_length"]},
            "eval": {"bootstrap": cfg["bootstrap"]}, "cache_dir": str(cache), "progress": False}


# ----------------------------------------------------------------------------- one run


def tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of a process and everything below it."""
    return sum(proc_status_kb("VmRSS", p) for p in [pid, *descendants(pid)])


def run_one(cfg: dict[str, Any], system: str, repeat: int, inputs: dict[str, Any], work: Path,
            timeout: float) -> dict[str, Any]:
    folder = work / f"{bench.signature(cfg)}-{system}-{repeat}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config_path, run_json, out = folder / "finetune.yaml", folder / "run.json", folder / "result.json"
    config_path.write_text(yaml.safe_dump(finetune_config(cfg, inputs["model"], inputs["data"], folder / "run",
                                                          work / "cache"), sort_keys=False), encoding="utf-8")
    threads = cfg["threads"] or len(os.sched_getaffinity(0))
    run_json.write_text(json.dumps({"system": system, "config_path": str(config_path), "threads": threads,
                                    "hf_bf16": cfg["hf_bf16"],
                                    "overrides": cfg["overrides"] if system == "medtrain" else []}, indent=1),
                        encoding="utf-8")
    cmd = [sys.executable, str(WORKER), "--config", str(run_json), "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(threads)}
    if system == "trainer":
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: the Trainer would wrap several in DataParallel
    peak, done = [0], threading.Event()
    started = time.perf_counter()
    with open(folder / "log.txt", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=bench.REPO,
                                start_new_session=True)

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], tree_rss_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            bench._kill_group(proc)
            rc = None
        done.set()
        sampler.join()
    row: dict[str, Any] = {"bench": "finetune", "matrix": inputs["matrix"], "id": bench.signature(cfg),
                           "name": label(cfg), "system": system, "repeat": repeat, "config": cfg,
                           "model_path": str(inputs["model"]), "run_folder": str(folder),
                           "time": datetime.datetime.now().isoformat(timespec="seconds"),
                           "wall_s": round(time.perf_counter() - started, 1), "returncode": rc,
                           "command": shlex.join(cmd), "tree_peak_rss_mb": round(peak[0] / 1024, 1)}
    if rc == 0 and out.is_file():
        row.update(json.loads(out.read_text(encoding="utf-8")))
    else:
        row.update(status="timeout" if rc is None else "error", error=f"exit status {rc}",
                   log_tail=bench._tail(folder / "log.txt"))
    row["cpu"] = cpu_record(threads=row.get("torch_threads") or threads)
    return row


# ----------------------------------------------------------------------------- medians and ratios


def headline(test: dict[str, dict[str, float | None]], metric: str) -> float | None:
    """The mean over test languages of one metric (None where a language has none)."""
    values = [scores.get(metric) for scores in (test or {}).values()]
    return statistics.fmean(values) if values and None not in values else None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def pair_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's runs (both systems, every repeat) -> medians per system and medtrain / Trainer ratios
    (tokens/s: above 1 medtrain is faster; seconds per epoch and peak memory: below 1 medtrain needs less), and
    the F1 difference, so speed is read beside accuracy."""
    first = runs[0]
    row: dict[str, Any] = {"bench": "finetune-pair", "matrix": first["matrix"], "id": first["id"],
                           "name": first["name"], "config": first["config"], "cpu": first.get("cpu"),
                           "time": max(r["time"] for r in runs)}
    for system in SYSTEMS:
        mine = [r for r in runs if r["system"] == system]
        ok = [r for r in mine if r.get("status") == "ok"]
        row[system] = {
            "runs": len(mine), "ok": len(ok),
            "tokens_per_s": _median([r.get("tokens_per_s") for r in ok]),
            "tokens_per_s_runs": [r.get("tokens_per_s") for r in ok],
            "epoch_s": _median([r.get("epoch_s") for r in ok]),
            "tree_peak_rss_mb": _median([r.get("tree_peak_rss_mb") for r in ok]),
            "rss_peak_mb": _median([(r.get("memory") or {}).get("rss_peak_mb") for r in ok]),
            "cuda_max_allocated_mb": _median([(r.get("memory") or {}).get("cuda_max_allocated_mb") for r in ok]),
            "test_f1": _median([headline(r.get("test"), "f1") for r in ok]),
            "test_auroc": _median([headline(r.get("test"), "auroc") for r in ok]),
            "tokens_per_epoch": ok[0].get("tokens_per_epoch") if ok else None,
        }
    m, t = row["medtrain"], row["trainer"]
    row["ratio"] = {"tokens_per_s": _ratio(m["tokens_per_s"], t["tokens_per_s"]),
                    "epoch_s": _ratio(m["epoch_s"], t["epoch_s"]),
                    "tree_peak_rss_mb": _ratio(m["tree_peak_rss_mb"], t["tree_peak_rss_mb"]),
                    "cuda_max_allocated_mb": _ratio(m["cuda_max_allocated_mb"], t["cuda_max_allocated_mb"])}
    row["f1_difference"] = (m["test_f1"] - t["test_f1"]) if None not in (m["test_f1"], t["test_f1"]) else None
    row["same_tokens"] = m["tokens_per_epoch"] == t["tokens_per_epoch"]
    row["medtrain_resolved"] = next((r.get("resolved") for r in runs
                                     if r["system"] == "medtrain" and r.get("status") == "ok"), None)
    return row


def pair_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("bench") == "finetune":
            by_id.setdefault(row["id"], []).append(row)
    return [pair_row(runs) for runs in by_id.values()]


def markdown(pairs: list[dict[str, Any]]) -> str:
    def num(value: float | None, fmt: str = ",.0f") -> str:
        return "-" if value is None else format(value, fmt)

    lines = ["| configuration | medtrain tokens/s | Trainer tokens/s | ratio | s/epoch (m / T) | peak RSS MB (m / T) |"
             " test F1 (m / T) | AUROC (m / T) | runs |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in pairs:
        m, t = p["medtrain"], p["trainer"]
        lines.append(
            f"| {p['name']} | {num(m['tokens_per_s'])} | {num(t['tokens_per_s'])} | "
            f"**{num(p['ratio']['tokens_per_s'], '.2f')}x** | {num(m['epoch_s'], '.1f')} / {num(t['epoch_s'], '.1f')} | "
            f"{num(m['tree_peak_rss_mb'])} / {num(t['tree_peak_rss_mb'])} | "
            f"{num(m['test_f1'], '.3f')} / {num(t['test_f1'], '.3f')} | "
            f"{num(m['test_auroc'], '.3f')} / {num(t['test_auroc'], '.3f')} | {m['ok']}+{t['ok']} |")
    cpus = sorted({cpu_label(p["cpu"]) for p in pairs if p.get("cpu")})
    return "\n".join(lines + ([""] + [f"CPU: {c}" for c in cpus] if cpus else [])) + "\n"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("matrix", type=Path)
    parser.add_argument("--out", type=Path, default=bench.RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--json", type=Path, help="also write every row (runs, then pairs) to this JSON file")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--repeat", type=int, help="interleaved repeats (matrix: repeat)")
    parser.add_argument("--only", action="append", default=[], help="configurations whose name or id contains this")
    parser.add_argument("--timeout", type=float, help="seconds per run (matrix: timeout_s)")
    parser.add_argument("--data", type=Path, help="a `medtrain sample-data` folder to use (default: made in the cache)")
    parser.add_argument("--dry-run", action="store_true", help="list the configurations")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    bench.ensure_cache()
    matrix, configs = load_matrix(args.matrix)
    configs = [c for c in configs if not args.only or any(o in label(c) or o in bench.signature(c) for o in args.only)]
    if args.dry_run:
        for cfg in configs:
            print(f"{bench.signature(cfg)}  {label(cfg)}")
        return 0
    missing = bench.missing_requirements([{"system": "trainer"}], False, bench.installed_version)
    if missing:
        raise UserError(f"the Trainer needs {', '.join(missing)}, not installed in {sys.prefix}: "
                        f"{sys.executable} -m pip install -e '.[bench]'", args.matrix)
    sample = args.data.resolve() if args.data else bench.sample_data(matrix.data_scale)
    results = bench.results_path(args.out, matrix.name)
    work = bench.CACHE / "runs" / f"{matrix.name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    inputs = [{"matrix": matrix.name, "model": model_folder(cfg, sample), "data": data_section(cfg, sample)}
              for cfg in configs]
    repeats, timeout = int(args.repeat or matrix.repeat), float(args.timeout or matrix.timeout_s)
    print(f"{matrix.name}: {len(configs)} configurations x 2 systems x {repeats}; results appended to {results}; "
          f"logs in {work}", flush=True)
    rows, started = [], time.perf_counter()
    for repeat, i, system in ((r, i, s) for r in range(repeats) for i in range(len(configs)) for s in SYSTEMS):
        row = run_one(configs[i], system, repeat, inputs[i], work, timeout)
        bench.append(results, row)
        rows.append(row)
        brief = (f"{row['tokens_per_s']:,.0f} tokens/s, {row['epoch_s']:.1f} s/epoch, test F1 "
                 f"{headline(row['test'], 'f1') or 0:.3f}" if row.get("status") == "ok"
                 else f"{row['status']}: {row.get('error')}; log {row['run_folder']}/log.txt")
        print(f"[run {repeat + 1}/{repeats}] {system:8s} {row['name']}: {brief} ({row['wall_s']:.0f} s)", flush=True)
    pairs = pair_rows(rows)
    for pair in pairs:
        bench.append(results, pair)
    table = markdown(pairs)
    print(table + f"{len(rows)} runs in {time.perf_counter() - started:.0f} s; results in {results}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows + pairs, indent=1, default=str), encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
