"""`benchmarks/decontaminate.py --profile`: where `match_batch` spends its time, step by step, beside the
tokenizer's time on the same batches (one process, as with num_workers=0)."""

from __future__ import annotations

import time
from pathlib import Path

def profile(data: dict, ngram: int, containment: float, batch_size: int = 1000) -> None:
    """Where match_batch spends its time, in this process (num_workers=0), on the larger corpus."""
    import cProfile
    import itertools
    import pstats

    import numpy as np
    from tokenizers import Tokenizer

    import medtrain.data.decontaminate as dc
    from medtrain.data.corpus import CorpusConfig, CorpusReader
    from medtrain.data.exclude_config import ExcludeConfig, ExcludeSource

    corpus = data["corpora"][max(data["corpora"])]
    rule = ExcludeConfig(sources=[data["evaluation"]], ngram=ngram, containment=containment, by=["patient_id"])
    source = dc.read_source(ExcludeSource(Path(data["evaluation"]), name="eval"), Path(data["evaluation"]), "eval")
    index = dc.EvaluationIndex.build(rule, [source])
    reader = CorpusReader(CorpusConfig(name="pretrain", path=Path(corpus["path"]), language="mixed", domain="mixed"),
                          Path(corpus["path"]), "fail", ("patient_id",))
    reader.check()
    batches = []
    iterator = iter(reader)
    while batch := list(itertools.islice(iterator, batch_size)):
        batches.append(([d.text for d in batch], [d.fields for d in batch]))
    tokenizer = Tokenizer.from_file(str(Path(data["tokenizer"]) / "tokenizer.json"))
    tokenizer.encode_special_tokens = True
    start = time.process_time()
    for texts, _ in batches:
        tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    tokenize_s = time.process_time() - start
    profiler = cProfile.Profile()
    start = time.process_time()
    profiler.enable()
    dropped = 0
    for texts, patients in batches:
        dropped += int((dc.match_batch(index, texts, patients).source != dc.KEPT).sum())
    profiler.disable()
    match_s = time.process_time() - start
    print(f"{corpus['mb']} MB, {len(batches)} batches of {batch_size}: tokenizer encode_batch_fast {tokenize_s:.1f} "
          f"CPU s (all its threads), match_batch {match_s:.1f} CPU s (under cProfile), dropped {dropped}")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    steps = _match_steps(index, batches[: max(1, len(batches) // 4)], np)
    total = sum(steps.values())
    print(f"match_batch's steps on {max(1, len(batches) // 4)} batches, wall s (share):")
    for name, seconds in steps.items():
        print(f"  {name:44} {seconds:7.2f}  {seconds / total:6.1%}")


def _match_steps(index, batches, np) -> dict[str, float]:
    """match_batch's code, step by step, with a clock around each."""
    import itertools

    import medtrain.data.decontaminate as dc

    steps: dict[str, float] = {}

    def lap(name: str, start: float) -> float:
        now = time.perf_counter()
        steps[name] = steps.get(name, 0.0) + now - start
        return now

    for texts, patients in batches:
        t = time.perf_counter()
        [next((index.patients[v] for v in values if v in index.patients), dc.KEPT) for values in patients]
        t = lap("patients", t)
        stream, sizes = [], np.empty(len(texts), dtype=np.int64)
        for d, text in enumerate(texts):
            found = dc.words(text)
            stream.extend(found)
            stream.append("")
            sizes[d] = len(found) + 1
        t = lap("words (regex, lower)", t)
        ids = np.fromiter(map(index.vocabulary.get, stream, itertools.repeat(0)), dtype=np.uint64, count=len(stream))
        doc_at = np.repeat(np.arange(len(texts), dtype=np.int64), sizes)
        t = lap("vocabulary lookup (dict.get per word)", t)
        hits, docs = [], []
        for n in (index.ngram, *index.short_lengths):
            if ids.size < n:
                continue
            unknown = np.concatenate([[0], np.cumsum(ids == 0)])
            clean = np.flatnonzero(unknown[n:] - unknown[:-n] == 0)
            t = lap("clean windows", t)
            hashes = dc.ngram_hashes(ids, n)[clean]
            t = lap("n-gram hashes (n passes per window)", t)
            where = np.minimum(np.searchsorted(index.hashes, hashes), index.hashes.size - 1)
            known = index.hashes[where] == hashes
            hits.append(where[known])
            docs.append(doc_at[clean[known]])
            t = lap("searchsorted in the index", t)
        if sum(h.size for h in hits):
            width = np.int64(index.hashes.size)
            pairs = np.unique(np.concatenate(docs) * width + np.concatenate(hits))
            doc, hit = pairs // width, pairs % width
            lengths = index.starts[hit + 1] - index.starts[hit]
            offsets = np.repeat(index.starts[hit] - (np.cumsum(lengths) - lengths), lengths) + np.arange(
                int(lengths.sum()))
            evaluation = index.postings[offsets].astype(np.int64)
            owner = np.repeat(doc, lengths)
            documents = np.int64(index.needed.size)
            np.unique(owner * documents + evaluation, return_counts=True)
            lap("hits -> postings -> counts", t)
    return steps
