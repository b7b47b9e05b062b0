"""`medtrain prepare` against what users run today, and its memory as the corpus grows.

    .venv/bin/python benchmarks/prepare_bench.py [--tokens 3e6] [--workers N] [--repeat 3] [--shard-mb 4]

(a) Throughput, tokens/s: medtrain `prepare` vs the transformers run_mlm recipe on the same JSONL,
    tokenizer and cores: `load_dataset("json")`, `.map(tokenize, batched=True, num_proc=N)`, then
    `.map(group_texts, ...)` (concatenate, cut into seq_len blocks). Target: medtrain >= 1.5x.
    The two alternate, `--repeat` times each, and the medians are compared (the machine may be shared).
(b) Peak memory of `prepare` on the corpus and on the corpus repeated 10 times, each in a fresh process:
    the peak over time of the summed PSS of prepare and its worker processes (sampled every 20 ms),
    with the main process's VmHWM beside it. Target: growth < 20%.
    prepare holds at most one shard of rows per split, so memory is bounded by `shard_size_mb`; the 1x
    corpus must exceed one shard (hence the small default --shard-mb) for the comparison to mean anything.

Each measurement runs in a fresh subprocess with nothing cached; library imports happen before the clock
starts, for both. Every measurement is appended as one JSON line to
benchmarks/results/prepare-<host>-<date>.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench_cpu import cpu_record

RESULTS = Path(__file__).parent / "results"

# A small clinical lexicon per language plus generated pseudo-words, so WordPiece splits some words.
LEXICON = {
    "nl": "patiënt heeft koorts hoest sinds drie dagen opname ziekenhuis behandeling medicatie bloeddruk "
          "hartslag longontsteking antibiotica diagnose onderzoek klachten pijn borst buik verpleegkundige "
          "ontslag controle poli huisarts verwijzing röntgenfoto uitslag",
    "ro": "pacientul prezintă febră tuse durere toracică internare spital tratament medicație tensiune "
          "arterială pneumonie antibiotice diagnostic examinare simptome abdominală asistentă externare "
          "control ambulatoriu medic trimitere radiografie rezultat",
    "es": "el paciente presenta fiebre tos dolor torácico ingreso hospital tratamiento medicación presión "
          "arterial neumonía antibióticos diagnóstico exploración síntomas abdominal enfermera alta control "
          "consulta médico derivación radiografía resultado",
}
SYLLABLES = "ka lo mi ne ru sa te vi do pa ze fi gu ho ja ce bu ni ta re".split()
FILLER = ". , ; : ( ) 12 38,5 mg/kg 5% - / 120/80".split()


# ----------------------------------------------------------------------------- inputs


def make_corpus(path: Path, target_tokens: float, seed: int = 0) -> int:
    """Write a synthetic nl/ro/es JSONL corpus of roughly `target_tokens` words; returns documents."""
    rng = np.random.default_rng(seed)
    pseudo = ["".join(rng.choice(SYLLABLES, size=rng.integers(2, 5))) for _ in range(3000)]
    vocab = {lang: np.array(words.split() + pseudo[i::3] + FILLER) for i, (lang, words) in enumerate(LEXICON.items())}
    langs = list(vocab)
    words_left = int(target_tokens)  # about one WordPiece token per generated word
    documents = 0
    with open(path, "w", encoding="utf-8") as f:
        while words_left > 0:
            lang = langs[documents % 3]
            length = int(min(4000, rng.lognormal(5.0, 0.8)))
            text = " ".join(vocab[lang][rng.integers(0, len(vocab[lang]), size=length)])
            f.write(json.dumps({"text": text, "lang": lang}, ensure_ascii=False) + "\n")
            words_left -= length
            documents += 1
    return documents


def repeat_file(src: Path, dst: Path, times: int) -> None:
    with open(dst, "wb") as out:
        for _ in range(times):
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)


def make_tokenizer(corpus: Path, out: Path) -> None:
    from medtrain.data.tokenizer import train_wordpiece

    with open(corpus, encoding="utf-8") as f:
        sample = [json.loads(line)["text"] for _, line in zip(range(2000), f)]
    train_wordpiece(sample, out, vocab_size=8000)


# ----------------------------------------------------------------------------- the two jobs (run in subprocesses)


def job_medtrain(corpus: str, tokenizer: str, out: str, workers: int, seq_len: int, shard_mb: float) -> dict:
    import medtrain.data.tokenizer  # noqa: F401  imported before the clock starts, as the baseline's is
    from medtrain.data.corpus import CorpusConfig
    from medtrain.data.pack import PrepareConfig, prepare

    cfg = PrepareConfig(tokenizer=Path(tokenizer), output_dir=Path(out), seq_len=seq_len, num_workers=workers,
                        shard_size_mb=shard_mb,
                        corpora=[CorpusConfig(name="bench", path=Path(corpus), language="mixed", domain="clinical")])
    start = time.perf_counter()
    manifest = prepare(cfg)
    seconds = time.perf_counter() - start
    sequences = sum(s.sequences for s in manifest.shards)
    return {"seconds": seconds, "sequences": sequences, "train_tokens": manifest.corpora[0].tokens}


def job_baseline(corpus: str, tokenizer: str, out: str, workers: int, seq_len: int) -> dict:
    """The run_mlm recipe (non line-by-line): tokenize with special tokens, then group_texts."""
    import datasets
    import pyarrow.compute as pc
    from itertools import chain

    from medtrain.data.tokenizer import load_tokenizer

    datasets.disable_progress_bars()
    tok = load_tokenizer(tokenizer)

    def tokenize(examples: dict) -> dict:
        return tok(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples: dict) -> dict:
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // seq_len) * seq_len
        return {k: [t[i: i + seq_len] for i in range(0, total, seq_len)] for k, t in concatenated.items()}

    start = time.perf_counter()
    raw = datasets.load_dataset("json", data_files=corpus, split="train", cache_dir=out)
    tokenized = raw.map(tokenize, batched=True, num_proc=workers, remove_columns=raw.column_names)
    grouped = tokenized.map(group_texts, batched=True, num_proc=workers)
    seconds = time.perf_counter() - start
    lengths = pc.list_value_length(tokenized.data.column("input_ids"))
    document_tokens = int(pc.sum(lengths).as_py()) - 2 * len(tokenized)  # less [CLS] and [SEP] per document
    return {"seconds": seconds, "sequences": len(grouped), "document_tokens": document_tokens}


# ----------------------------------------------------------------------------- measuring a subprocess


def _tree_pss_kb(root: int) -> int:
    """Summed PSS (shared pages split fairly) of `root` and all its descendants."""
    return sum(pss_kb(pid) for pid in [root, *descendants(root)])


def descendants(root: int) -> list[int]:
    """Every process below `root` (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_kb(pid: int) -> int:
    """A process's PSS; 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def own_peak() -> dict:
    """This process's own peak RSS (VmHWM). Not getrusage(RUSAGE_CHILDREN) for the workers: a spawned child
    is forked before it execs, and Linux carries that moment's RSS (the whole parent's) into its ru_maxrss."""
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return {"main_peak_rss_mb": round(hwm_kb / 1024, 1)}


def run_job(job: str, kwargs: dict) -> dict:
    """Run one job in a fresh Python; return its result plus the peak over time of its process tree's PSS."""
    proc = subprocess.Popen([sys.executable, __file__, "--job", job, json.dumps(kwargs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_pss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{job} failed:\n{stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_tree_pss_mb": round(peak[0] / 1024, 1)}


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=float, default=3e6, help="approximate corpus size in tokens (1x)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes for both")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--shard-mb", type=float, default=4.0,
                        help="shard size; memory is bounded by it, so keep it below the 1x corpus's token bytes")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs of each system (median reported)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where corpora and outputs go (default: a temp dir)")
    parser.add_argument("--job", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        job, kwargs = args.job[0], json.loads(args.job[1])
        result = {"medtrain": job_medtrain, "baseline": job_baseline}[job](**kwargs)
        print(json.dumps({**result, **own_peak()}))
        return

    work = Path(tempfile.mkdtemp(prefix="prepare-bench-", dir=args.work_dir))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    host = socket.gethostname()
    results = RESULTS / f"prepare-{host}-{datetime.date.today().isoformat()}.jsonl"
    common = {"host": host, "cpus": len(os.sched_getaffinity(0)), "workers": args.workers, "seq_len": args.seq_len,
              "shard_mb": args.shard_mb, "python": platform.python_version(), "git": _git_rev(),
              "time": datetime.datetime.now().isoformat(timespec="seconds"),
              "cpu": cpu_record(threads=args.workers)}
    RESULTS.mkdir(parents=True, exist_ok=True)

    def record(row: dict) -> dict:
        with open(results, "a", encoding="utf-8") as f:
            f.write(json.dumps({**common, **row}) + "\n")
        return row

    start = time.perf_counter()
    corpus, corpus10 = work / "corpus.jsonl", work / "corpus10.jsonl"
    documents = make_corpus(corpus, args.tokens)
    repeat_file(corpus, corpus10, 10)
    make_tokenizer(corpus, work / "tokenizer")
    print(f"corpus: {documents} documents, {corpus.stat().st_size / 2**20:.1f} MiB (x10: the same, repeated), "
          f"made in {time.perf_counter() - start:.1f} s; {args.workers} workers, {args.repeat} repeats")
    tokenizer = str(work / "tokenizer")

    def medtrain(path: Path, name: str) -> dict:
        shutil.rmtree(work / name, ignore_errors=True)
        return run_job("medtrain", {"corpus": str(path), "tokenizer": tokenizer, "out": str(work / name),
                                    "workers": args.workers, "seq_len": args.seq_len, "shard_mb": args.shard_mb})

    def baseline() -> dict:
        shutil.rmtree(work / "hf-cache", ignore_errors=True)  # no cache hits: a first run, as users see it
        return run_job("baseline", {"corpus": str(corpus), "tokenizer": tokenizer, "out": str(work / "hf-cache"),
                                    "workers": args.workers, "seq_len": args.seq_len})

    # (a) throughput: alternate the two so load from other jobs on the machine hits both alike
    seconds: dict[str, list[float]] = {"baseline": [], "medtrain": []}
    tokens = 0
    for rep in range(args.repeat):
        for system, job in (("baseline", baseline), ("medtrain", lambda: medtrain(corpus, "shards-1x"))):
            row = job()
            tokens = row.get("document_tokens", tokens)
            seconds[system].append(row["seconds"])
            record({"measure": "throughput", "system": system, "repeat": rep, "corpus": "1x", **row})
    median = {system: statistics.median(values) for system, values in seconds.items()}
    rate = {system: tokens / value for system, value in median.items()}

    # (b) memory: the same prepare on the corpus and on ten times the corpus, each in a fresh process
    memory = {}
    for size, path in (("1x", corpus), ("10x", corpus10)):
        row = medtrain(path, f"shards-{size}")
        memory[size] = row
        record({"measure": "memory", "system": "medtrain", "corpus": size, **row})
    growth = memory["10x"]["peak_tree_pss_mb"] / memory["1x"]["peak_tree_pss_mb"] - 1
    speedup = rate["medtrain"] / rate["baseline"]
    record({"measure": "summary", "tokens": tokens, "baseline_tokens_per_s": rate["baseline"],
            "medtrain_tokens_per_s": rate["medtrain"], "speedup": speedup, "memory_growth_10x": growth,
            "targets": {"speedup": ">= 1.5", "memory_growth_10x": "< 0.20"}})

    print(f"\nthroughput on {tokens:,} tokens, median of {args.repeat} (seconds of each run)")
    for system in seconds:
        runs = ", ".join(f"{v:.2f}" for v in seconds[system])
        print(f"  {system:10} {median[system]:7.2f} s  {rate[system]:>11,.0f} tokens/s   ({runs})")
    print(f"  medtrain / baseline: {speedup:.2f}x   (target >= 1.5x)")
    print("peak memory of prepare: PSS of the process and its workers (main process's peak RSS)")
    for size, row in memory.items():
        print(f"  corpus {size:3}  {row['peak_tree_pss_mb']:7.1f} MB  ({row['main_peak_rss_mb']:.0f} MB)   "
              f"{row['seconds']:.1f} s")
    print(f"  growth at 10x: {growth:+.1%}   (target < 20%)")
    print(f"raw results appended to {results}")


def _git_rev() -> str | None:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
