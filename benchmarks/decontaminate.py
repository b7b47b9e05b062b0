"""What `exclude` costs `prepare`: 10,000 evaluation documents against a pretraining corpus (issue 25).

    .venv/bin/python benchmarks/decontaminate.py [--mb 100] [--eval-docs 10000] [--repeat 3] [--workers N]
                                                  [--json OUT] [--profile]

Data, built once in a temporary folder from `write_sample_data(seed=0, contaminate=False)`:
    corpus      one JSONL pretraining corpus of about `--mb` MB, and one of half that size (time is linear in
                the corpus, memory flat: the two sizes show it), `{"text", "patient_id"}` per record: the sample
                corpora's records (clinical, biomedical, general; nl, ro, es) over and over, every copy after
                the first with its lines shuffled (seeded), so that no two documents are the same
    evaluation  one screening-style JSONL source of `--eval-docs` notes `{"patient_id", "note_id", "text",
                "label"}` (3 notes a patient): the sample's screening notes (all splits) and NER test .txt
                files, lines shuffled and a reference line added, so each is distinct (~420 words each)
    planted     `--planted` evaluation notes copied into each corpus (half verbatim, half lowercased with the
                line breaks flattened: still a copy for the rule), and `--patients` ordinary records naming an
                evaluation patient in `patient_id`: what `exclude` must drop, exactly
Timed: `prepare` (seq_len 128, `--workers` tokenizer processes, default every CPU this process may use) without
`exclude` and with `exclude: {sources: [eval.jsonl], ngram: 13, containment: 0.5, by: [patient_id]}`, each run in a
fresh Python, the four (size x with/without) interleaved `--repeat` times (which goes first alternates), medians.
The exclude run's time includes reading the source and building the index. Memory: the parent's peak RSS (VmHWM),
the largest worker's peak RSS (VmHWM of each worker, sampled every 20 ms), and the peak over time of the summed
PSS of the whole process tree. Target: exclude costs <= 15% of `prepare`'s time.

`--profile`: no timing runs; cProfile of `match_batch` over the corpus's batches in this process (as with
num_workers=0), beside the tokenizer's time on the same batches, and the time of each step of `match_batch`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))  # benchmarks/ after the installed packages: its modules shadow none

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time

from decontaminate_profile import profile
from prepare_bench import descendants, pss_kb

TARGET = 0.15
SEQ_LEN = 128
NGRAM, CONTAINMENT = 13, 0.5
NOTES_PER_PATIENT = 3


# ----------------------------------------------------------------------------- data


def evaluation_notes(sample: Path, count: int, seed: int = 0) -> list[dict]:
    """`count` distinct screening-style notes from the sample's screening notes and NER test texts."""
    pool = [json.loads(line)["text"] for f in sorted(sample.glob("screening/*/*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    pool += [p.read_text(encoding="utf-8") for p in sorted(sample.glob("ner/*/test/*.txt"))]
    rng = random.Random(seed)
    notes = []
    for i in range(count):
        lines = pool[i % len(pool)].splitlines()
        body = lines[1:]
        rng.shuffle(body)
        text = "\n".join([lines[0], *body, f"Ref. {i:05d}"])
        patient = i // NOTES_PER_PATIENT
        notes.append({"patient_id": f"ev-{patient:05d}", "note_id": f"ev-{i:05d}", "text": text,
                      "label": int(patient % 7 == 0)})
    return notes


def write_corpus(sample: Path, path: Path, mb: float, notes: list[dict], planted: int, patients: int,
                 seed: int = 0) -> dict:
    """About `mb` MB of JSONL records with `planted` evaluation notes and `patients` evaluation patients among them,
    spread evenly; returns what it wrote."""
    texts = []
    for f in sorted(sample.glob("corpora/*.jsonl")):
        texts += [json.loads(line)["text"] for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(texts)  # the domains and languages interleaved
    rng = random.Random(seed + 1)
    target = int(mb * 1e6)
    lines, size, n = [], 0, 0
    while size < target:
        text = texts[n % len(texts)]
        if n >= len(texts):  # a later copy: its lines shuffled (a one-line text: its words)
            parts = text.splitlines()
            if len(parts) > 2:
                rng.shuffle(parts)
                text = "\n".join(parts)
            else:
                tokens = text.split()
                rng.shuffle(tokens)
                text = " ".join(tokens)
        line = json.dumps({"text": text, "patient_id": f"c-{n:08d}"}, ensure_ascii=False) + "\n"
        lines.append(line)
        size += len(line.encode("utf-8"))
        n += 1
    documents = len(lines)
    step = max(1, documents // (planted + patients + 1))
    chosen = [notes[(k * 7919) % len(notes)] for k in range(planted)]
    inserts = []
    for k, note in enumerate(chosen):  # half verbatim, half lowercased and flattened: both copies for the rule
        text = note["text"] if k % 2 == 0 else " ".join(note["text"].lower().split())
        inserts.append({"text": text, "patient_id": f"c-planted-{k:04d}"})
    for k in range(patients):  # an ordinary text, but a record of an evaluation patient
        patient = notes[(k * 104729 + 1) % len(notes)]["patient_id"]
        inserts.append({"text": texts[(k * 31) % len(texts)], "patient_id": patient})
    random.Random(seed + 2).shuffle(inserts)
    for k, record in enumerate(inserts):
        lines.insert((k + 1) * step + k, json.dumps(record, ensure_ascii=False) + "\n")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return {"path": str(path), "mb": round(path.stat().st_size / 1e6, 1), "documents": len(lines),
            "planted_copies": planted, "planted_patients": patients,
            "words": sum(len(json.loads(line)["text"].split()) for line in lines)}


def build_data(work: Path, args: argparse.Namespace) -> dict:
    from medtrain.data.sample import write_sample_data

    sample = work / "sample"
    write_sample_data(sample, seed=0, scale=1.0, contaminate=False)
    notes = evaluation_notes(sample, args.eval_docs)
    assert len({n["text"] for n in notes}) == len(notes), "evaluation notes must be distinct"
    evaluation = work / "eval.jsonl"
    with open(evaluation, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(n, ensure_ascii=False) + "\n" for n in notes)
    corpora = {}
    for mb in sizes(args.mb):
        corpora[mb] = write_corpus(sample, work / f"corpus-{mb:g}mb.jsonl", mb, notes, args.planted, args.patients)
    return {"tokenizer": str(sample / "tokenizer"), "evaluation": str(evaluation), "corpora": corpora,
            "eval_docs": len(notes), "eval_patients": len({n["patient_id"] for n in notes}),
            "eval_words": sum(len(n["text"].split()) for n in notes)}


def sizes(mb: float) -> list[float]:
    return [mb / 2, mb]


# ----------------------------------------------------------------------------- one prepare (in a subprocess)


def job(corpus: str, tokenizer: str, evaluation: str | None, out: str, workers: int) -> dict:
    import medtrain.data.decontaminate  # noqa: F401  imports before the clock, in both runs
    import medtrain.data.tokenizer  # noqa: F401
    from medtrain.data.corpus import CorpusConfig
    from medtrain.data.exclude_config import ExcludeConfig
    from medtrain.data.pack import PrepareConfig, prepare

    exclude = None if evaluation is None else ExcludeConfig(
        sources=[{"path": evaluation, "name": "eval"}], ngram=NGRAM, containment=CONTAINMENT, by=["patient_id"])
    cfg = PrepareConfig(tokenizer=Path(tokenizer), output_dir=Path(out), seq_len=SEQ_LEN, num_workers=workers,
                        corpora=[CorpusConfig(name="pretrain", path=Path(corpus), language="mixed", domain="mixed")],
                        exclude=exclude)
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_start = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
    start = time.perf_counter()
    manifest = prepare(cfg)
    seconds = time.perf_counter() - start
    dropped = manifest.exclusion["dropped"]["pretrain"] if manifest.exclusion else {}
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime - cpu_start
    return {"seconds": seconds, "cpu_s": round(cpu_s, 2), "kept_documents": manifest.corpora[0].documents,
            "tokens": manifest.corpora[0].tokens,
            "dropped": sum(d["documents"] for d in dropped.values()), "parent_peak_rss_mb": round(hwm_kb / 1024, 1)}


def _status_kb(pid: int, *keys: str) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in keys:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def run_job(kwargs: dict) -> dict:
    """One prepare in a fresh Python: its result, the largest worker VmHWM and the process tree's peak PSS.
    Not getrusage(RUSAGE_CHILDREN): a spawned worker is forked before it execs and inherits that moment's RSS."""
    shutil.rmtree(kwargs["out"], ignore_errors=True)
    proc = subprocess.Popen([sys.executable, __file__, "--job", json.dumps(kwargs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker_hwm: dict[int, int] = {}
    tree_pss = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            total = pss_kb(proc.pid)
            for pid in descendants(proc.pid):
                hwm = _status_kb(pid, "VmHWM").get("VmHWM", 0)
                worker_hwm[pid] = max(worker_hwm.get(pid, 0), hwm)
                total += pss_kb(pid)
            tree_pss[0] = max(tree_pss[0], total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    shutil.rmtree(kwargs["out"], ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "worker_peak_rss_mb": round(max(worker_hwm.values(), default=0) / 1024, 1),
            "tree_peak_pss_mb": round(tree_pss[0] / 1024, 1)}


# ----------------------------------------------------------------------------- the index alone


def index_figures(evaluation: str) -> dict:
    """Read and index the evaluation source in this process: seconds and the size each worker receives."""
    import pickle

    from medtrain.data.decontaminate import EvaluationIndex, read_source
    from medtrain.data.exclude_config import ExcludeConfig, ExcludeSource

    rule = ExcludeConfig(sources=[evaluation], ngram=NGRAM, containment=CONTAINMENT, by=["patient_id"])
    start = time.perf_counter()
    source = read_source(ExcludeSource(Path(evaluation), name="eval"), Path(evaluation), "exclude.sources.0")
    index = EvaluationIndex.build(rule, [source])
    seconds = time.perf_counter() - start
    return {"index_s": round(seconds, 2), "index_ngrams": int(index.hashes.size),
            "index_postings": int(index.postings.size), "index_vocabulary": len(index.vocabulary),
            "index_pickled_mb": round(len(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6, 1)}


# ----------------------------------------------------------------------------- main


def cpu() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__
    vector = [f for f in ("sse4_2", "avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_tile") if f in flags]
    numpy_best = [k for k in ("AVX2", "AVX512_SKX", "AVX512_ICL", "AVX512_SPR") if __cpu_features__.get(k)]
    return {"cpu": model, "cpus": len(os.sched_getaffinity(0)), "vector": vector,
            "numpy_dispatch": numpy_best[-1] if numpy_best else "baseline"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="larger corpus in MB (the other: half of it)")
    parser.add_argument("--eval-docs", type=int, default=10_000)
    parser.add_argument("--planted", type=int, default=100, help="evaluation notes copied into each corpus")
    parser.add_argument("--patients", type=int, default=20, help="corpus records naming an evaluation patient")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the rows and runs here")
    parser.add_argument("--profile", action="store_true", help="profile match_batch instead of timing prepare")
    parser.add_argument("--work-dir", type=Path, help="where the data goes (default: a temporary folder)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(job(**json.loads(args.job))))
        return 0
    work = Path(tempfile.mkdtemp(prefix="decontaminate-bench-", dir=args.work_dir))
    try:
        return measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> int:
    start = time.perf_counter()
    data = build_data(work, args)
    env = cpu()
    print(f"data in {time.perf_counter() - start:.0f} s: {data['eval_docs']} evaluation notes "
          f"({data['eval_patients']} patients, {data['eval_words'] / data['eval_docs']:.0f} words each); corpora "
          + ", ".join(f"{c['mb']} MB = {c['documents']} documents ({c['words'] / 1e6:.1f}M words)"
                      for c in data["corpora"].values())
          + f" with {args.planted} evaluation notes and {args.patients} evaluation patients planted in each")
    print(f"{env['cpu']}, {env['cpus']} CPUs, {' '.join(env['vector'])} (numpy dispatch {env['numpy_dispatch']}); "
          f"{args.workers} workers")
    if args.profile:
        profile(data, NGRAM, CONTAINMENT)
        return 0
    index = index_figures(data["evaluation"])
    print(f"index: {index['index_ngrams']:,} distinct {NGRAM}-grams, {index['index_postings']:,} postings, "
          f"{index['index_vocabulary']:,} words; read + built in {index['index_s']} s; "
          f"{index['index_pickled_mb']} MB pickled (one copy per worker)")
    runs: list[dict] = []
    for rep in range(args.repeat):
        for mb in sizes(args.mb):
            order = (False, True) if (rep + int(mb == args.mb)) % 2 == 0 else (True, False)
            for exclude in order:
                row = run_job({"corpus": data["corpora"][mb]["path"], "tokenizer": data["tokenizer"],
                               "evaluation": data["evaluation"] if exclude else None,
                               "out": str(work / "shards"), "workers": args.workers})
                row.update(repeat=rep, mb=data["corpora"][mb]["mb"], exclude=exclude)
                runs.append(row)
                print(f"  repeat {rep} {row['mb']:6.1f} MB exclude={str(exclude):5}  {row['seconds']:7.1f} s "
                      f"{row['cpu_s']:6.1f} CPU s  "
                      f"dropped {row['dropped']:4}  parent {row['parent_peak_rss_mb']:.0f} MB, worker "
                      f"{row['worker_peak_rss_mb']:.0f} MB, tree PSS {row['tree_peak_pss_mb']:.0f} MB", flush=True)
    rows = []
    expected = args.planted + args.patients
    for mb in sizes(args.mb):
        corpus = data["corpora"][mb]
        pick = {e: [r for r in runs if r["mb"] == corpus["mb"] and r["exclude"] == e] for e in (False, True)}
        median = {e: statistics.median(r["seconds"] for r in pick[e]) for e in pick}
        cpu_median = {e: statistics.median(r["cpu_s"] for r in pick[e]) for e in pick}
        cost = median[True] / median[False] - 1
        ratios = [w["seconds"] / wo["seconds"] - 1 for w, wo in zip(pick[True], pick[False])]
        dropped = sorted({r["dropped"] for r in pick[True]})
        mem = {e: {k: max(r[k] for r in pick[e]) for k in ("parent_peak_rss_mb", "worker_peak_rss_mb",
                                                           "tree_peak_pss_mb")} for e in pick}
        rows.append({"mb": corpus["mb"], "documents": corpus["documents"], "words": corpus["words"],
                     "tokens": pick[False][0]["tokens"], "without_s": round(median[False], 2),
                     "with_s": round(median[True], 2), "cost": round(cost, 4),
                     "without_cpu_s": round(cpu_median[False], 2), "with_cpu_s": round(cpu_median[True], 2),
                     "cost_per_repeat": [round(c, 4) for c in ratios], "dropped": dropped, "expected": expected,
                     "memory_without": mem[False], "memory_with": mem[True],
                     "runs_s": {str(e): [round(r["seconds"], 2) for r in pick[e]] for e in pick}})
    print(f"\n{env['cpu']} ({' '.join(env['vector'])}; numpy {env['numpy_dispatch']}), {env['cpus']} CPUs shared "
          f"with other jobs, {args.workers} workers; {data['eval_docs']:,} evaluation notes; median of {args.repeat} "
          "interleaved runs (cost per repeat in brackets); peak memory: the largest of the runs\n")
    print("| corpus | documents | tokens | prepare s | with exclude s | cost | CPU s (all processes) "
          "| dropped (expected) | parent peak RSS MB | worker peak RSS MB | tree peak PSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        per = ", ".join(f"{c:+.0%}" for c in r["cost_per_repeat"])
        mw, mx = r["memory_without"], r["memory_with"]
        print(f"| {r['mb']} MB | {r['documents']:,} | {r['tokens']:,} | {r['without_s']:.1f} | {r['with_s']:.1f} | "
              f"{r['cost']:+.1%} ({per}) | {r['without_cpu_s']:.1f} -> {r['with_cpu_s']:.1f} | "
              f"{','.join(map(str, r['dropped']))} ({r['expected']}) | "
              f"{mw['parent_peak_rss_mb']:.0f} -> {mx['parent_peak_rss_mb']:.0f} | "
              f"{mw['worker_peak_rss_mb']:.0f} -> {mx['worker_peak_rss_mb']:.0f} | "
              f"{mw['tree_peak_pss_mb']:.0f} -> {mx['tree_peak_pss_mb']:.0f} |")
    small, large = rows
    fit = {}  # seconds = fixed + per_mb * MB, through the two sizes; then at 1 GB (1000 MB)
    for key in ("without_s", "with_s", "without_cpu_s", "with_cpu_s"):
        per_mb = (large[key] - small[key]) / (large["mb"] - small["mb"])
        fit[key] = {"fixed": round(large[key] - per_mb * large["mb"], 2), "per_mb": round(per_mb, 4),
                    "at_1gb": round(large[key] + per_mb * (1000 - large["mb"]), 1)}
    cost_1gb = fit["with_s"]["at_1gb"] / fit["without_s"]["at_1gb"] - 1
    print(f"\nlinear in the corpus (x{large['tokens'] / small['tokens']:.2f} tokens): wall s = fixed + per MB x MB")
    for key, name in (("without_s", "prepare"), ("with_s", "with exclude"), ("without_cpu_s", "prepare, CPU"),
                      ("with_cpu_s", "with exclude, CPU")):
        f = fit[key]
        print(f"  {name:18} {f['fixed']:6.1f} s + {f['per_mb']:.3f} s/MB  -> 1 GB: {f['at_1gb']:6.0f} s")
    ok = cost_1gb <= TARGET and all(r["dropped"] == [expected] for r in rows)
    print(f"cost at 1 GB (extrapolated): {cost_1gb:+.0%}; target <= {TARGET:.0%}; dropped as planted: "
          f"{'yes' if all(r['dropped'] == [expected] for r in rows) else 'NO'} -> {'ok' if ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"env": {**env, "host": socket.gethostname(), "workers": args.workers,
                                                 "python": platform.python_version(),
                                                 "date": datetime.date.today().isoformat()},
                                         "data": data, "index": index, "rows": rows, "fit": fit,
                                         "cost_1gb": round(cost_1gb, 4), "runs": runs}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
