"""The mixture sampler: which packed sequence sits at each global sequence position of a training run.

    sampler = build_sampler("runs/data", cfg.data, stage="stable", seed=0)
    batch = sampler.batch(start=position, count=8)   # {"input_ids": LongTensor[8, seq_len], "labels": ...}

`batch(start, count)` is a pure function of (seed, positions start .. start+count-1): the same positions give
the same sequences in any process, after a restart, with any batch size and on any rank, so a trainer that
takes rank r's slice of the global batch (or ramps the batch size, or resumes) reads exactly what an
uninterrupted single-process run would.

How a position maps to a sequence:
1. Positions are grouped in blocks of `block` (4096). Every block holds each source exactly
   round(weight × block) times (stratified, so the realised shares match the configured ones to ±1/block),
   in an order shuffled per block from (seed, block number).
2. The n-th draw from a source (counted over all earlier blocks + earlier slots of this block) is sequence
   permute(n mod N) of that source's N training sequences, with a fresh pseudo-random permutation per epoch
   (a Feistel network keyed by seed, source and epoch: O(1) memory however large N is).

Held-out sequences live in separate shards (documents chosen by content hash at prepare time), so they never
appear in training batches; `heldout_batches` reads them for eval loss.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import xxhash

from ..errors import XmodelError
from .shards import Manifest, PackedDataset, load_manifest

IGNORE_INDEX = -100
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _round_fn(x: np.ndarray, key: np.uint64) -> np.ndarray:
    h = x ^ key
    h = (h ^ (h >> np.uint64(30))) * _M1
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(31))


def permute(index: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed pseudo-random permutation of [0, n), applied to `index` (array, values in [0, n)).

    Four-round Feistel network on the smallest even bit width covering n, with cycle walking for values that
    land outside [0, n): a bijection on [0, n) that needs no table.
    """
    index = np.asarray(index, dtype=np.uint64)
    if n <= 1:
        return np.zeros_like(index)
    bits = max(2, math.ceil(math.log2(n)))
    bits += bits % 2
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    keys = [np.uint64(xxhash.xxh3_64_intdigest(f"{key}:{r}".encode())) for r in range(4)]

    def once(x: np.ndarray) -> np.ndarray:
        left, right = x >> half, x & mask
        for k in keys:
            left, right = right, left ^ (_round_fn(right, k) & mask)
        return (left << half) | right

    out = once(index)
    outside = out >= np.uint64(n)
    while outside.any():
        out[outside] = once(out[outside])
        outside = out >= np.uint64(n)
    return out


class MixtureSampler:
    """Deterministic weighted sampling of packed sequences by global sequence position (see module doc)."""

    def __init__(self, manifest: Manifest | str, weights: dict[str, float], seed: int = 0, block: int = 4096,
                 cache_blocks: int = 64):
        self.manifest = load_manifest(manifest)
        self.seed = int(seed)
        self.block = int(block)
        self.names = [n for n, w in weights.items() if w > 0]
        if not self.names:
            raise XmodelError("mixture: no source with a positive weight")
        self.datasets = [self.manifest.dataset(n, "train") for n in self.names]
        for name, ds in zip(self.names, self.datasets):
            if len(ds) == 0:
                raise XmodelError(f"mixture: source {name} has weight {weights[name]:g} but no training sequences "
                                  f"in {self.manifest.path} (too little data for one {ds.seq_len}-token sequence?)")
        self.seq_len = self.manifest.seq_len
        self.tokenizer_hash = self.manifest.tokenizer_hash
        total = sum(weights[n] for n in self.names)
        self.weights = {n: weights[n] / total for n in self.names}
        w = np.array([self.weights[n] for n in self.names])
        # Stratified slots: slot j of a block goes to the source whose cumulative-weight interval holds
        # (j + 0.5) / block — each source gets round(w * block) slots (±1).
        edges = np.cumsum(w)
        edges[-1] = 1.0
        self._template = np.minimum(np.searchsorted(edges, (np.arange(self.block) + 0.5) / self.block, side="right"),
                                    len(self.names) - 1).astype(np.int64)
        self.per_block = np.bincount(self._template, minlength=len(self.names))
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_blocks = cache_blocks

    # ---- position → (source, draw number) -----------------------------------------------------------------
    def _block(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each slot, rank of the slot among its source's slots) for block k."""
        hit = self._cache.get(k)
        if hit is not None:
            self._cache.move_to_end(k)
            return hit
        rng = np.random.default_rng([self.seed, k, 0x6D6978])
        sources = rng.permutation(self._template)
        order = np.argsort(sources, kind="stable")
        first = np.concatenate([[0], np.cumsum(self.per_block)[:-1]])
        rank = np.empty(self.block, dtype=np.int64)
        rank[order] = np.arange(self.block) - first[sources[order]]
        self._cache[k] = (sources, rank)
        if len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return sources, rank

    def assignments(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, sequence index within that source's training set) for positions start..start+count-1."""
        if start < 0 or count < 0:
            raise ValueError(f"positions must be non-negative, got start={start} count={count}")
        pos = np.arange(start, start + count, dtype=np.int64)
        src = np.empty(count, dtype=np.int64)
        draw = np.empty(count, dtype=np.int64)
        blocks = pos // self.block
        for k in np.unique(blocks):
            sel = np.nonzero(blocks == k)[0]
            sources, rank = self._block(int(k))
            slots = pos[sel] - k * self.block
            src[sel] = sources[slots]
            draw[sel] = k * self.per_block[sources[slots]] + rank[slots]
        seq = np.empty(count, dtype=np.int64)
        for s in np.unique(src):
            sel = np.nonzero(src == s)[0]
            n = len(self.datasets[s])
            epoch, within = np.divmod(draw[sel], n)
            out = np.empty(len(sel), dtype=np.int64)
            for e in np.unique(epoch):
                m = epoch == e
                key = xxhash.xxh3_64_intdigest(f"{self.seed}:{self.names[s]}:{int(e)}".encode())
                out[m] = permute(within[m], n, key)
            seq[sel] = out
        return src, seq

    # ---- batches -------------------------------------------------------------------------------------------
    def arrays(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids int64[count, seq_len], labels int64 with -100 on masked tokens) as numpy arrays."""
        src, seq = self.assignments(start, count)
        ids = np.empty((count, self.seq_len), dtype=np.int64)
        labels = np.empty((count, self.seq_len), dtype=np.int64)
        for s in np.unique(src):
            sel = np.nonzero(src == s)[0]
            rows, mask = self.datasets[s].get_many(seq[sel])
            ids[sel] = rows
            labels[sel] = rows if mask is None else np.where(mask, rows, IGNORE_INDEX)
        return ids, labels

    def batch(self, start: int, count: int) -> dict:
        """{"input_ids": LongTensor[count, seq_len], "labels": LongTensor} for positions start..start+count-1.

        labels equal input_ids except -100 on prompt tokens of SFT data (the model shifts them itself).
        """
        import torch

        ids, labels = self.arrays(start, count)
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    def shares(self, start: int, count: int) -> dict[str, float]:
        """Realised share of each source among positions start..start+count-1 (sequences = tokens)."""
        src, _ = self.assignments(start, count)
        counts = np.bincount(src, minlength=len(self.names))
        return {n: float(c) / max(1, count) for n, c in zip(self.names, counts)}

    # ---- held-out ------------------------------------------------------------------------------------------
    def heldout(self, source: str) -> PackedDataset:
        return self.manifest.dataset(source, "heldout")

    def heldout_batches(self, source: str, batch_size: int = 8, max_sequences: int | None = None):
        """Batches (same form as `batch`) over the held-out sequences of one source, in order."""
        import torch

        ds = self.heldout(source)
        n = len(ds) if max_sequences is None else min(len(ds), max_sequences)
        for start in range(0, n, batch_size):
            rows, mask = ds.get_many(np.arange(start, min(n, start + batch_size)))
            labels = rows if mask is None else np.where(mask, rows, IGNORE_INDEX)
            yield {"input_ids": torch.from_numpy(rows), "labels": torch.from_numpy(np.ascontiguousarray(labels))}

    def heldout_sources(self) -> list[str]:
        """Sources (of this mixture) that have held-out sequences."""
        return [n for n in self.names if self.manifest.sources[n]["heldout"]["sequences"] > 0]


def build_sampler(prepared, cfg=None, stage: str = "stable", seed: int = 0, block: int = 4096) -> MixtureSampler:
    """A MixtureSampler over a prepared directory (or Manifest) for a stage's mixture.

    cfg: the DataConfig with the mixture weights (None = the config stored in the manifest at prepare time).
    stage: "stable" (pretraining sources by weight) or "decay" (sft_share of SFT data by category).
    """
    from ..config.core import build_section
    from .config import DataConfig

    manifest = load_manifest(prepared)
    if cfg is None:
        cfg = build_section(DataConfig, manifest.config, "data")
    elif isinstance(cfg, dict):
        cfg = build_section(DataConfig, cfg, "data")
    if cfg.seq_len != manifest.seq_len:
        raise XmodelError(f"data.seq_len is {cfg.seq_len} but {manifest.path} was prepared with seq_len "
                          f"{manifest.seq_len}")
    try:
        weights = cfg.stage_weights(stage)
    except ValueError as e:
        raise XmodelError(f"data.{e}" if stage in ("stable", "decay") else str(e)) from None
    missing = [n for n in weights if n not in manifest.sources]
    if missing:
        raise XmodelError(f"{manifest.path}: the {stage} mixture needs {', '.join(missing)}, which was not prepared")
    return MixtureSampler(manifest, weights, seed=seed, block=block)
