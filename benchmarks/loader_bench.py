"""Loader throughput: PackedStream + MLM masking through the DataLoader, in tokens/s per rank.

    python benchmarks/loader_bench.py                    # default workers, seq_len 128 and 512
    python benchmarks/loader_bench.py --workers 0 1 2    # compare worker counts
    python benchmarks/loader_bench.py --whole-word

Target: 1.5M tokens/s per rank, enough to keep a GPU fed at BERT-base speeds with headroom. The script
writes a synthetic shard dir (mBERT-sized vocabulary, so uint32 tokens, 3 corpora) into a temporary folder,
warms up, counts tokens delivered over a few seconds, and appends one JSON line per measurement to
benchmarks/results/loader-<host>-<date>.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_cpu import cpu_record
from medtrain.data.masking import Masker, MaskingConfig
from medtrain.data.shards import CorpusInfo, Manifest, write_manifest, write_shard
from medtrain.data.stream import DEFAULT_WORKERS, build_train_loader

TARGET = 1.5e6  # tokens/s per rank
VOCAB = 119_547  # bert-base-multilingual-cased
SPECIAL = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
CORPORA = {"en": 0.5, "ro": 0.3, "de": 0.2}  # share of the synthetic tokens
RESULTS = Path(__file__).parent / "results"


def make_shards(root: Path, seq_len: int, tokens: int, shard_tokens: int = 1 << 23) -> Path:
    """Random token shards (a [CLS] first in each sequence) with a manifest, `tokens` in all."""
    rng = np.random.default_rng(0)
    shards, corpora = [], []
    for name, share in CORPORA.items():
        sequences = int(tokens * share) // seq_len
        per_shard = shard_tokens // seq_len
        for n, first in enumerate(range(0, sequences, per_shard)):
            block = rng.integers(1000, VOCAB, size=(min(per_shard, sequences - first), seq_len), dtype=np.uint32)
            block[:, 0] = SPECIAL["cls"]
            shards.append(write_shard(root, f"train/{name}/shard-{n:05d}.bin", name, "train", block))
        corpora.append(CorpusInfo(name=name, language=name, domain="clinical", weight=share, documents=sequences,
                                  tokens=sequences * seq_len, sequences=sequences, validation_sequences=0))
    write_manifest(root, Manifest(format_version=1, seq_len=seq_len, dtype="<u4", vocab_size=VOCAB,
                                  tokenizer="synthetic", tokenizer_fingerprint="0" * 16, special_ids=SPECIAL,
                                  corpora=corpora, shards=shards))
    return root


def measure(shard_dir: Path, micro_batch: int, workers: int, whole_word: bool, warmup: float,
            seconds: float) -> dict:
    """Tokens/s delivered to the training loop, after `warmup` seconds of start-up and prefetch."""
    continuation = torch.arange(VOCAB) >= 80_000 if whole_word else None  # a synthetic "##" share of ~1/3
    masker = Masker(VOCAB, SPECIAL, MaskingConfig(whole_word=whole_word), continuation)
    loader = build_train_loader(shard_dir, micro_batch, masker=masker, num_workers=workers)
    batches, tokens, start = iter(loader), 0, time.perf_counter()
    while time.perf_counter() - start < warmup:
        next(batches)
    start, count = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        batch = next(batches)
        tokens += batch.input_ids.numel()
        count += 1
        loader.state_dict()  # what the training loop does after every step
    return {"tokens_per_s": round(tokens / elapsed), "batches": count, "seconds": round(elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[DEFAULT_WORKERS])
    parser.add_argument("--seq-len", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32_000_000, help="synthetic tokens per shard dir")
    parser.add_argument("--whole-word", action="store_true")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    host, today = socket.gethostname(), datetime.date.today().isoformat()
    out = RESULTS / f"loader-{host}-{today}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        for seq_len in args.seq_len:
            shard_dir = make_shards(Path(tmp) / f"seq{seq_len}", seq_len, args.tokens)
            for workers in args.workers:
                result = measure(shard_dir, args.micro_batch, workers, args.whole_word, args.warmup, args.seconds)
                row = {"bench": "loader", "host": host, "date": today, "cpus": os.cpu_count(),
                       "torch": torch.__version__, "seq_len": seq_len, "micro_batch": args.micro_batch,
                       "num_workers": workers, "default_workers": workers == DEFAULT_WORKERS,
                       "whole_word": args.whole_word, "corpus_tokens": args.tokens, **result,
                       "target": TARGET, "ratio": round(result["tokens_per_s"] / TARGET, 2),
                       "cpu": cpu_record(threads=torch.get_num_threads())}
                print(f"seq_len {seq_len:4d} x {args.micro_batch} workers {workers}: "
                      f"{result['tokens_per_s'] / 1e6:.2f}M tokens/s = {row['ratio']:.2f}x the 1.5M target")
                with out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"results appended to {out}")


if __name__ == "__main__":
    main()
