"""prepare's tokenizer workers: documents in batches -> (flat token ids, tokens per document, and the exclusion
rule's match when an `exclude` index is given), in order, from a pool of processes (or this one), at most a few
batches in flight so memory stays flat. Used by `prepare` and `medtrain overlap` (medtrain.data.pack)."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from medtrain.data.corpus import Document
from medtrain.data.shards import dtype_for_vocab
from medtrain.errors import UserError

Batch = tuple[list[str], list[tuple[str, ...]] | None]
"""Documents' texts, and the values of their `exclude.by` fields when a patient rule applies."""
Encoded = tuple[np.ndarray, np.ndarray, Any]
"""Flat token ids, tokens per document, and the exclusion rule's `BatchMatch` (None without exclude)."""
Encode = Callable[[Iterable[Batch]], Iterator[Encoded]]


def encoder_args(tokenizer: Any) -> tuple[str, str]:
    """What a tokenizer worker builds its encoder from: the tokenizer's JSON and the shard dtype."""
    return tokenizer.backend_tokenizer.to_str(), dtype_for_vocab(len(tokenizer)).str


class _Encoder:
    """Texts -> (flat token ids, tokens per document); no special tokens added, none parsed from the text.

    `encode_special_tokens` makes a literal "[SEP]" in a note plain text, as transformers'
    `split_special_tokens=True` does, so a document cannot forge sequence boundaries.
    """

    def __init__(self, tokenizer_json: str, dtype: str, index: Any = None):
        self.backend = Tokenizer.from_str(tokenizer_json)
        self.backend.encode_special_tokens = True
        self.backend.no_truncation()
        self.backend.no_padding()
        self.dtype = np.dtype(dtype)
        self.index = index  # an EvaluationIndex: the exclusion rule runs here too, beside the tokenizer

    def __call__(self, batch: Batch) -> Encoded:
        texts, patients = batch
        encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False)
        id_lists = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        ids = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=self.dtype, count=int(lengths.sum()))
        if self.index is None:
            return ids, lengths, None
        from medtrain.data.decontaminate import match_batch

        return ids, lengths, match_batch(self.index, texts, patients)


_worker_encoder: _Encoder | None = None


def _start_worker(tokenizer_json: str, dtype: str, index: Any) -> None:
    """Pool initializer: each worker builds its tokenizer once; the pool already uses every core."""
    global _worker_encoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it shuts the pool down
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_encoder = _Encoder(tokenizer_json, dtype, index)


def _encode_in_worker(batch: Batch) -> Encoded:
    assert _worker_encoder is not None, "worker started without _start_worker"
    return _worker_encoder(batch)


class EncoderPool:
    """Context manager giving `encode(batches) -> results in order`, in worker processes or in this one."""

    def __init__(self, num_workers: int | None, args: tuple[str, str], index: Any):
        self.workers = _available_cpus() if num_workers is None else num_workers
        self.encoder_args = (*args, index)
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> Encode:
        if self.workers == 0:
            return lambda batches: map(_Encoder(*self.encoder_args), batches)  # Rust threads still parallelize
        # spawn, not fork: safe with the threads transformers and tqdm may have started
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=self.encoder_args)
        return self._ordered

    def _ordered(self, batches: Iterable[Batch]) -> Iterator[Encoded]:
        """Like Pool.imap, but reads ahead at most two batches per worker, so memory stays flat."""
        assert self.pool is not None
        pending: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        try:
            for batch in batches:
                pending.append(self.pool.submit(_encode_in_worker, batch))
                if len(pending) > 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise UserError("a tokenizer worker died (out of memory?); lower batch_size or num_workers") from None

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _available_cpus() -> int:
    """CPUs this process may run on (SLURM and cgroups restrict this below os.cpu_count())."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def batches(documents: Iterable[Document], size: int, with_fields: bool) -> Iterator[Batch]:
    """Batches of `size` documents (the last one shorter): their texts, and their `exclude.by` values if asked."""
    iterator = iter(documents)
    while batch := list(itertools.islice(iterator, size)):
        yield [d.text for d in batch], [d.fields for d in batch] if with_fields else None
