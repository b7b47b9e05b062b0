"""PackedStream: the training order over packed shards, a pure function of (seed, batch index).

The order, from the inside out (every seed is a numpy SeedSequence of small integers):

* **Corpus epoch**: one pass over one corpus's train sequences. The corpus is cut into blocks of `block_size`
  consecutive sequences; the block order is a permutation seeded by (seed, corpus, corpus epoch) and each block
  is shuffled by (seed, corpus, corpus epoch, block). This is "shuffle the shards, then shuffle within each
  shard", made independent of where the packer cut shards and needing O(sequences / block_size) memory instead
  of a permutation of every sequence. The price: sequences drawn from one corpus close together in time come
  from the same block, as with a shard-by-shard shuffle.
* **Stream epoch**: N = the train sequences of all corpora with a positive weight. In every stream epoch corpus
  c supplies exactly n_c sequences, n_c = N * p_c rounded by largest remainder, interleaved uniformly at random
  (seeded by (seed, stream epoch)); p_c is the corpus's probability under the sampling mode (data/mixing.py:
  uniform, the default, is weight_c / sum(weights)). A corpus drawn above its size wraps into its next corpus
  epoch inside a stream epoch; one drawn below carries on where it stopped in the next stream epoch. With
  proportional sampling and equal weights (or uniform sampling with weights proportional to corpus sizes) n_c is
  the corpus size, so stream epoch e is corpus epoch e of every corpus and every train sequence is seen exactly
  once per epoch.
* **Ranks and workers**: the global stream is cut into micro-batches of `micro_batch` consecutive sequences;
  global batch g goes to rank g % world_size as that rank's batch g // world_size. Nothing is dropped or padded:
  the stream runs on across epochs and an epoch boundary may fall inside a batch, so ranks see disjoint
  sequences and, together, each sequence of an epoch once. DataLoader worker w of W produces its rank's batches
  w, w+W, ...; the DataLoader returns them round-robin, which is batch order, whatever W is.

So the batch k of a rank is a function of (seed, corpus mix, sampling mode, world size, rank, micro_batch,
block_size, k) and the data. The state is k plus those values, checked on load; `StatefulLoader` knows k in the
main process from the number of batches it received, however far the workers prefetched.

* **Resizing**: the position in the global stream is what a run has consumed, whatever its partition. A state
  saved by another world size or micro-batch resumes at its global position (`origin`): global batch g then
  covers positions origin + g * micro_batch ... , cut over the new ranks as above, so the whole run reads each
  position once. Masks are keyed by origin + k, so a resized rank never reuses a key its rank number had before.
* **Global sequence ids**: a train sequence's id is its corpus's offset (the train sequences of the corpora
  before it, in manifest order) plus its index within its corpus. It depends on the data alone, not on the
  world size; `with_ids=True` makes each batch carry them (`Audited`), for the audit of what a run trained on.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medtrain.data.masking import MaskedBatch, Masker, batch_generator
from medtrain.data.mixing import Sampling, mixture_weights
from medtrain.data.shards import Manifest, ShardInfo, open_shard, read_manifest
from medtrain.errors import UserError

STATE_VERSION = 1
# 1 and 2 measured alike on a busy 2-core machine (2.8-3.3M tokens/s at seq_len 128, ~10M at 512, target 1.5M;
# benchmarks/loader_bench.py); 2 absorbs stalls of one, and workers sleep once their prefetch queue is full
DEFAULT_WORKERS = 2
DEFAULT_BLOCK_SIZE = 1 << 16  # sequences per shuffle block: 32M tokens at seq_len 512, ~0.5 MiB of permutation
_MIX_CHUNK = 4096  # stream positions whose corpus interleaving is materialised at a time
_BLOCK_ORDER, _BLOCK_SHUFFLE, _MIX_SPLIT, _MIX_ORDER = range(4)  # keep the seed sequences of each use apart

Batch = torch.Tensor | MaskedBatch


class Audited(NamedTuple):
    """A batch with the global ids of its sequences (streams built with `with_ids=True`)."""

    batch: Batch
    ids: torch.Tensor  # (micro_batch,) int64


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `weights` (largest remainder, ties to the first)."""
    quota = total * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    leftover = total - int(counts.sum())
    counts[np.argsort(counts - quota, kind="stable")[:leftover]] += 1
    return counts


class _ShardSet:
    """The shards of one split, in order, seen as one flat run of sequences.

    Memmaps open lazily in each process and are not pickled: a DataLoader worker maps the files itself
    instead of receiving a copy of their contents.
    """

    def __init__(self, shard_dir: Path, manifest: Manifest, shards: list[ShardInfo]):
        self.shard_dir, self.manifest, self.shards = shard_dir, manifest, shards
        self.starts = np.cumsum([0] + [s.sequences for s in shards])
        self._maps: dict[int, np.memmap] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _map(self, index: int) -> np.memmap:
        if index not in self._maps:
            self._maps[index] = open_shard(self.shard_dir, self.manifest, self.shards[index])
        return self._maps[index]

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` of the flat run, one fancy-indexed read per shard touched."""
        shard = np.searchsorted(self.starts, ids, side="right") - 1
        rows = ids - self.starts[shard]
        out = np.empty((len(ids), self.manifest.seq_len), dtype=self.manifest.np_dtype)
        for index in np.unique(shard):
            where = np.flatnonzero(shard == index)
            out[where] = self._map(int(index))[rows[where]]
        return out

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of the flat run, as contiguous reads."""
        parts = []
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        for index in range(first, len(self.shards)):
            lo, hi = max(start, self.starts[index]), min(stop, self.starts[index + 1])
            if lo >= hi:
                break
            parts.append(self._map(index)[lo - self.starts[index]:hi - self.starts[index]])
        return np.concatenate(parts)


class _CorpusOrder:
    """Where the q-th draw from one corpus lands: corpus epoch, shuffled block order, shuffle inside the block."""

    def __init__(self, seed: int, corpus: int, size: int, block_size: int):
        self.seed, self.corpus, self.size, self.block_size = seed, corpus, size, block_size
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None
        self._blocks: dict[tuple[int, int], np.ndarray] = {}

    def _block_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Blocks in this epoch's order, and the corpus position at which each starts."""
        if self._epoch is None or self._epoch[0] != epoch:
            n_blocks = -(-self.size // self.block_size)
            order = _rng(self.seed, _BLOCK_ORDER, self.corpus, epoch).permutation(n_blocks)
            sizes = np.minimum(self.block_size, self.size - order * self.block_size)
            self._epoch = (epoch, order, np.cumsum(sizes) - sizes)
        return self._epoch[1], self._epoch[2]

    def _block_shuffle(self, epoch: int, block: int) -> np.ndarray:
        key = (epoch, block)
        if key not in self._blocks:
            if len(self._blocks) >= 4:  # a batch touches one or two blocks per corpus; keep memory flat
                self._blocks.clear()
            size = min(self.block_size, self.size - block * self.block_size)
            self._blocks[key] = _rng(self.seed, _BLOCK_SHUFFLE, self.corpus, epoch, block).permutation(size)
        return self._blocks[key]

    def sequences(self, draws: np.ndarray) -> np.ndarray:
        """Sequence index within the corpus for each draw number (draws count from 0 over all corpus epochs)."""
        epochs, positions = np.divmod(draws, self.size)
        out = np.empty_like(draws)
        for epoch in np.unique(epochs):
            at = np.flatnonzero(epochs == epoch)
            order, starts = self._block_order(int(epoch))
            slot = np.searchsorted(starts, positions[at], side="right") - 1
            blocks, offsets = order[slot], positions[at] - starts[slot]
            for block in np.unique(blocks):
                here = blocks == block
                out[at[here]] = block * self.block_size + self._block_shuffle(int(epoch), int(block))[offsets[here]]
        return out


class _Mix:
    """Which corpus each position of a stream epoch draws from: a uniformly random interleaving of the epoch's
    per-corpus counts, built one chunk at a time.

    A chunk's counts come from walking a binary tree over the epoch's chunks, splitting the counts at each node
    with a multivariate hypergeometric draw seeded by the node: any chunk in O(log chunks) draws, and the totals
    over an epoch are exact.
    """

    def __init__(self, seed: int, counts: np.ndarray, chunk: int = _MIX_CHUNK):
        self.seed, self.counts, self.chunk = seed, counts, chunk
        self.total = int(counts.sum())
        self.n_chunks = -(-self.total // chunk)
        self._cached: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def _split(self, epoch: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts per corpus in chunk j, and the counts drawn before it in this epoch."""
        lo, hi, counts, before = 0, self.n_chunks, self.counts, np.zeros_like(self.counts)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            left_len = min(mid * self.chunk, self.total) - lo * self.chunk
            left = _rng(self.seed, _MIX_SPLIT, epoch, lo, hi).multivariate_hypergeometric(counts, left_len)
            if j < mid:
                counts, hi = left, mid
            else:
                counts, before, lo = counts - left, before + left, mid
        return counts, before

    def chunk_draws(self, epoch: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """For each position of chunk j: its corpus, and its draw number within that corpus in this epoch."""
        if self._cached is None or self._cached[0] != (epoch, j):
            counts, before = self._split(epoch, j)
            corpus = _rng(self.seed, _MIX_ORDER, epoch, j).permutation(np.repeat(np.arange(len(counts)), counts))
            by_corpus = np.argsort(corpus, kind="stable")
            rank_in_corpus = np.empty_like(corpus)
            rank_in_corpus[by_corpus] = np.arange(len(corpus)) - (np.cumsum(counts) - counts)[corpus[by_corpus]]
            self._cached = ((epoch, j), corpus, before[corpus] + rank_in_corpus)
        return self._cached[1], self._cached[2]

    def drawn_before(self, position: int) -> np.ndarray:
        """Sequences per corpus at global positions 0 .. position-1: whole epochs hold exactly `counts`; in the
        partial one the split tree gives the counts before its chunk and only that chunk is materialised."""
        epoch, within = divmod(position, self.total)
        j, offset = divmod(within, self.chunk)
        counts = epoch * self.counts
        if within:
            _, before = self._split(epoch, j)
            chunk_corpus, _ = self.chunk_draws(epoch, j)
            counts = counts + before + np.bincount(chunk_corpus[:offset], minlength=len(self.counts))
        return counts

    def draws(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corpus and corpus draw number (counting over all stream epochs) of each global stream position."""
        epochs, within = np.divmod(positions, self.total)
        chunks, offsets = np.divmod(within, self.chunk)
        corpus, draw = np.empty_like(positions), np.empty_like(positions)
        for epoch, j in np.unique(np.stack([epochs, chunks]), axis=1).T:
            at = np.flatnonzero((epochs == epoch) & (chunks == j))
            chunk_corpus, chunk_draw = self.chunk_draws(int(epoch), int(j))
            corpus[at] = chunk_corpus[offsets[at]]
            draw[at] = epoch * self.counts[corpus[at]] + chunk_draw[offsets[at]]
        return corpus, draw


def _check_partition(micro_batch: int, rank: int, world_size: int, seed: int) -> None:
    if micro_batch < 1:
        raise UserError(f"micro_batch must be at least 1, got {micro_batch}")
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside a world of {world_size} ranks")
    if seed < 0:
        raise UserError(f"the data seed must be a non-negative integer, got {seed}")


def _to_batch(tokens: np.ndarray, masker: Masker | None, seed: int, rank: int, k: int) -> Batch:
    ids = torch.from_numpy(tokens.astype(np.int64))
    return ids if masker is None else masker(ids, batch_generator(seed, rank, k))


class PackedStream(IterableDataset):
    """An endless stream of this rank's train micro-batches, int64 (micro_batch, seq_len), or MaskedBatch
    when a masker is given (masking then runs in the DataLoader workers, seeded by (seed, rank, batch)); each
    wrapped as `Audited` with its global sequence ids when `with_ids`."""

    def __init__(self, shard_dir: str | Path, *, micro_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, weights: Mapping[str, float] | None = None, masker: Masker | None = None,
                 block_size: int = DEFAULT_BLOCK_SIZE, sampling: Sampling = "uniform", temperature: float = 1.0,
                 with_ids: bool = False):
        _check_partition(micro_batch, rank, world_size, seed)
        if block_size < 1:
            raise UserError(f"block_size must be at least 1, got {block_size}")
        self.shard_dir, self.manifest = Path(shard_dir), read_manifest(shard_dir)
        self.micro_batch, self.rank, self.world_size, self.seed = micro_batch, rank, world_size, seed
        self.block_size, self.masker, self.with_ids = block_size, masker, with_ids
        self.sampling, self.temperature = sampling, float(temperature)
        self.corpora = [c.name for c in self.manifest.corpora]
        sizes = np.array([sum(s.sequences for s in self.manifest.shards_of("train", c)) for c in self.corpora])
        weights_now = self._weights(weights)
        self._check_sizes(sizes, weights_now)
        languages = [c.language for c in self.manifest.corpora]
        try:
            masses = mixture_weights(sizes, languages, weights_now, sampling, self.temperature)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.target = masses / masses.sum()  # = mixture_probabilities(...): each corpus's share of the stream
        self.mix = apportion(int(sizes[weights_now > 0].sum()), masses)  # the target in sequences per epoch
        self._shards = _ShardSet(self.shard_dir, self.manifest,
                                 [s for c in self.corpora for s in self.manifest.shards_of("train", c)])
        self._offsets = np.cumsum(sizes) - sizes
        self._orders = [_CorpusOrder(seed, i, int(n), block_size) for i, n in enumerate(sizes)]
        self._mixer = _Mix(seed, self.mix)
        self._fingerprint = self.manifest.fingerprint()
        self.position = 0  # batches of this rank consumed since `origin`
        self.origin = 0  # global stream position where this partition starts (non-zero after a resize)

    def _weights(self, overrides: Mapping[str, float] | None) -> np.ndarray:
        """Manifest weights, with the corpora named in `overrides` replaced."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.corpora))
        if unknown:
            raise UserError(f"corpus weights name unknown corpora {unknown}; the shards hold {self.corpora}")
        weights = np.array([overrides.get(c.name, c.weight) for c in self.manifest.corpora], dtype=np.float64)
        if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise UserError(f"corpus weights must be non-negative with a positive sum, got {weights.tolist()}")
        return weights

    def _check_sizes(self, sizes: np.ndarray, weights: np.ndarray) -> None:
        empty = [c for c, n, w in zip(self.corpora, sizes, weights) if w > 0 and n == 0]
        if empty:
            raise UserError(f"corpora {empty} have a weight but no train sequences: give them weight 0")

    @property
    def sequences_per_epoch(self) -> int:
        return int(self.mix.sum())

    @property
    def epoch(self) -> int:
        """The stream epoch of the next sequence this rank reads (for logs)."""
        return self._first_position(self.position) // self.sequences_per_epoch

    def _first_position(self, k: int) -> int:
        return self.origin + (k * self.world_size + self.rank) * self.micro_batch

    def consumed_share(self, sequences: int) -> dict[str, dict[str, Any]]:
        """What the whole run (all ranks) trained on in its first `sequences` sequences: per corpus, its
        sequences, tokens, realised share and target probability.

        Ranks take global batches in turn, so after k batches on every rank they have read global positions
        0 .. k * world_size * micro_batch - 1 between them: pass k * world_size * micro_batch.
        """
        if sequences < 0:
            raise UserError(f"consumed sequences must be non-negative, got {sequences}")
        counts = self._mixer.drawn_before(sequences)
        return {name: {"sequences": int(n), "tokens": int(n) * self.manifest.seq_len,
                       "share": float(n) / sequences if sequences else 0.0, "target": float(p)}
                for name, n, p in zip(self.corpora, counts, self.target)}

    def sequence_ids(self, k: int) -> np.ndarray:
        """The global ids of the sequences of this rank's batch k (see the module docstring)."""
        positions = np.arange(self.micro_batch, dtype=np.int64) + self._first_position(k)
        corpus, draw = self._mixer.draws(positions)
        ids = np.empty_like(positions)
        for c in np.unique(corpus):
            at = np.flatnonzero(corpus == c)
            ids[at] = self._offsets[c] + self._orders[c].sequences(draw[at])
        return ids

    def tokens(self, k: int) -> np.ndarray:
        """This rank's batch k as a (micro_batch, seq_len) array of the shard dtype."""
        return self._shards.gather(self.sequence_ids(k))

    def batch(self, k: int) -> Batch | Audited:
        ids = self.sequence_ids(k)
        batch = _to_batch(self._shards.gather(ids), self.masker, self.seed, self.rank, self.origin + k)
        return Audited(batch, torch.from_numpy(ids)) if self.with_ids else batch

    def __iter__(self) -> Iterator[Batch | Audited]:
        worker = get_worker_info()
        if worker is not None:  # a copy in a worker process: its position is the main process's business
            for k in itertools.count(self.position + worker.id, worker.num_workers):
                yield self.batch(k)
            return
        while True:
            k = self.position
            self.position = k + 1
            yield self.batch(k)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready: the batches consumed and everything that must match for that count to mean the same
        (`origin` only once a resize has set it, so a run never resized writes the same state as before)."""
        origin = {"origin": self.origin} if self.origin else {}
        return {"version": STATE_VERSION, "batches": self.position, "epoch": self.epoch, **origin,
                **self._identity()}

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.seed, **self._partition(), "seq_len": self.manifest.seq_len,
                "block_size": self.block_size, "mix": dict(zip(self.corpora, self.mix.tolist())),
                "sampling": self.sampling, "temperature": self.temperature, "manifest": self._fingerprint}

    def _partition(self) -> dict[str, int]:
        return {"world_size": self.world_size, "rank": self.rank, "micro_batch": self.micro_batch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume where the saved state stopped; a state from a different set-up is a UserError naming what
        differs. One saved by another world size or micro-batch (any of its ranks: at a step boundary all
        ranks have read the same number of batches) resumes at its global position, re-partitioned."""
        if state.get("version") != STATE_VERSION:
            raise UserError(f"data stream state version {state.get('version')!r}; this medtrain reads "
                            f"version {STATE_VERSION}")
        now = self._identity()
        state = {"sampling": "uniform", "temperature": 1.0, "origin": 0, **state}  # older states lack these
        resized = any(state.get(key) != now[key] for key in ("world_size", "micro_batch"))
        differs = [f"{key} {state.get(key)!r} in the checkpoint, {value!r} now"
                   for key, value in now.items() if state.get(key) != value
                   and not (resized and key in self._partition())]
        if differs:
            raise UserError("the checkpoint's data stream state does not match this run: " + "; ".join(differs)
                            + " (resume with the same data, seed and data settings)")
        batches = state.get("batches")
        if not isinstance(batches, int) or batches < 0:
            raise UserError(f"data stream state has no valid batch count ({batches!r})")
        if resized:
            self.origin, self.position = global_position(state), 0
        else:
            self.origin, self.position = int(state["origin"]), batches


def global_position(state: Mapping[str, Any]) -> int:
    """Sequences the whole run had read when a rank saved `state` (at a step boundary: step x global batch)."""
    return int(state.get("origin", 0)) + int(state["batches"]) * int(state["world_size"]) * int(state["micro_batch"])


class StatefulLoader:
    """A DataLoader over a PackedStream whose `state_dict()` is exact in the main process.

    The state is the number of batches handed to the training loop: workers are deterministic in which batch
    they produce, so prefetched batches in flight do not matter. Call `state_dict()` after each step.
    """

    def __init__(self, stream: PackedStream, num_workers: int = DEFAULT_WORKERS, pin_memory: bool | None = None,
                 prefetch_factor: int = 4):
        self.stream = stream
        self._kwargs: dict[str, Any] = {
            "batch_size": None, "num_workers": num_workers, "collate_fn": _pack,
            # Its own generator: starting workers must not draw from the global RNG, or a resumed run's
            # dropout would be one draw off the uninterrupted run's.
            "generator": torch.Generator().manual_seed(0),
            "worker_init_fn": _ignore_stop_signals,
            "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
            **({"prefetch_factor": prefetch_factor} if num_workers > 0 else {}),
        }
        self._live: Generator[Batch | Audited, None, None] | None = None

    def __iter__(self) -> Iterator[Batch | Audited]:
        self._close()  # one live iterator: another's workers would run on from a stale position
        self._live = _received(self.stream, self._kwargs)
        return self._live

    def _close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the saved batch; an iterator already running is closed, the next `iter()` starts there."""
        self._close()
        self.stream.load_state_dict(state)


def _ignore_stop_signals(_worker_id: int) -> None:
    """SLURM signals every process of a step; only the training process decides when to stop and save, so a
    worker must survive SIGTERM/SIGUSR1/SIGUSR2 (PyTorch's own shutdown still ends it)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def build_train_loader(shard_dir: str | Path, micro_batch: int, rank: int = 0, world_size: int = 1, *,
                       seed: int = 0, weights: Mapping[str, float] | None = None, masker: Masker | None = None,
                       num_workers: int = DEFAULT_WORKERS, sampling: Sampling = "uniform",
                       temperature: float = 1.0, with_ids: bool = False) -> StatefulLoader:
    """This rank's train loader with the defaults: masking in the workers, pinned memory when CUDA is there."""
    stream = PackedStream(shard_dir, micro_batch=micro_batch, rank=rank, world_size=world_size, seed=seed,
                          weights=weights, masker=masker, sampling=sampling, temperature=temperature,
                          with_ids=with_ids)
    return StatefulLoader(stream, num_workers=num_workers)


def _received(stream: PackedStream, kwargs: dict[str, Any]) -> Generator[Batch | Audited, None, None]:
    """Batches from a fresh DataLoader, advancing the stream's position as each reaches the caller.

    A function, not a method: a generator holding the StatefulLoader would form a reference cycle, and a cycle
    collected after a later fork would shut this DataLoader's workers down from the wrong process.
    """
    start = stream.position  # workers start (and copy the stream) here; one iterator per run: no persistence
    for received, batch in enumerate(DataLoader(stream, **kwargs), start=1):
        stream.position = start + received
        yield _unpack(batch)


def _pack(batch: Batch | Audited) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One tensor per batch (runs in the worker): each tensor crosses to the main process through a shared-memory
    segment of its own, and at 128 tokens per sequence that per-tensor cost, not the reading, limits throughput.
    An audited batch sends its ids as a second tensor (that cost only where the audit is on)."""
    if isinstance(batch, Audited):
        return _pack(batch.batch), batch.ids
    if not isinstance(batch, MaskedBatch):
        return batch
    header = torch.tensor([*batch.input_ids.shape, len(batch.masked_positions)])
    return torch.cat([header, batch.input_ids.reshape(-1), batch.masked_positions, batch.masked_labels])


def _unpack(packed: torch.Tensor | Sequence[torch.Tensor]) -> Batch | Audited:
    """Views into the packed tensor (so pinned memory stays pinned)."""
    if not isinstance(packed, torch.Tensor):
        return Audited(_unpack(packed[0]), packed[1])
    if packed.dim() == 2:
        return packed
    rows, seq_len, n_masked = packed[:3].tolist()
    ids_end = 3 + rows * seq_len
    return MaskedBatch(packed[3:ids_end].view(rows, seq_len), packed[ids_end:ids_end + n_masked],
                       packed[ids_end + n_masked:])


class ValidationStream(IterableDataset):
    """The validation split in order, each sequence exactly once per pass, split over ranks.

    The split (or one corpus of it) is cut into world_size * J batches as equal as possible, J = ceil(sequences /
    (world_size * micro_batch)); rank r takes the contiguous run of batches r*J .. r*J+J-1. Every rank runs the
    same number of batches, which sharded (ZeRO-3) forward passes need, and reads are contiguous. Masking, if
    given, is seeded by (seed, rank, batch), so every evaluation sees identical masks.
    """

    def __init__(self, shard_dir: str | Path, *, micro_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, masker: Masker | None = None, corpus: str | None = None):
        _check_partition(micro_batch, rank, world_size, seed)
        manifest = read_manifest(shard_dir)
        names = [c.name for c in manifest.corpora]
        if corpus is not None and corpus not in names:
            raise UserError(f"no corpus {corpus!r} in the shards; they hold {names}")
        shards = [s for c in names if corpus in (None, c) for s in manifest.shards_of("validation", c)]
        self._shards = _ShardSet(Path(shard_dir), manifest, shards)
        self.rank, self.seed, self.masker = rank, seed, masker
        total = len(self._shards)
        if total == 0:
            raise UserError("the shards hold no validation sequences" + (f" of corpus {corpus!r}" if corpus else "")
                            + ": prepare them with a validation share, or turn evaluation off")
        self.batches = -(-total // (world_size * micro_batch))
        n_global = world_size * self.batches
        if total < n_global:
            raise UserError(f"{total} validation sequences cannot fill {self.batches} non-empty batches on each of "
                            f"{world_size} ranks (that needs {n_global}): use a micro_batch of 2 or more, or more "
                            "validation data")
        self._bounds = [i * total // n_global for i in range(rank * self.batches, (rank + 1) * self.batches + 1)]

    def __len__(self) -> int:
        return self.batches

    def batch(self, j: int) -> Batch:
        tokens = self._shards.slice(self._bounds[j], self._bounds[j + 1])
        return _to_batch(tokens, self.masker, self.seed, self.rank, j)

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        first, step = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for j in range(first, self.batches, step):
            yield self.batch(j)


def validation_loader(stream: ValidationStream, num_workers: int = DEFAULT_WORKERS,
                      pin_memory: bool | None = None) -> DataLoader:
    """A DataLoader for repeated evaluations: persistent workers, so each evaluation skips the worker start-up."""
    return DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory)
