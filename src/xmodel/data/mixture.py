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
appear in training batches; `heldout.HeldoutSource` reads them for eval loss.

`mixture_record(sampler)` is what a run's config.json keeps of the mixture it trained on; `xmodel data stats
RUN_DIR` prints it back (`load_mixture_record`).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import xxhash

from ..errors import XmodelError
from .batches import as_batch, labels_from_mask
from .manifest import Manifest, load_manifest
from .permute import permute
from .shards import PackedDataset
from .weights import normalise_weights

RUN_CONFIG = "config.json"   # a training run's config, where the trainer records the mixture
RECORD_KEY = "mixture"


def stratified_slots(shares, block: int) -> np.ndarray:
    """The source (index into `shares`, which sum to 1) of each of a block's slots: slot j goes to the source whose
    cumulative-share interval holds (j + 0.5) / block, so each source gets round(share × block) slots (±1)."""
    edges = np.cumsum(np.asarray(shares, dtype=np.float64))
    edges[-1] = 1.0
    slots = np.searchsorted(edges, (np.arange(block) + 0.5) / block, side="right")
    return np.minimum(slots, len(edges) - 1).astype(np.int64)


class MixtureSampler:
    """Deterministic weighted sampling of packed sequences by global sequence position (see module doc)."""

    def __init__(self, manifest: Manifest | str, weights: dict[str, float], seed: int = 0, block: int = 4096,
                 cache_blocks: int = 64, stage: str | None = None):
        self.manifest = load_manifest(manifest)
        self.seed = int(seed)
        self.block = int(block)
        self.stage = stage  # "stable" or "decay" when built from a config's stage mixture (for the run's record)
        self.weights = normalise_weights(weights, "mixture")
        self.names = list(self.weights)
        self.datasets = [PackedDataset.of(self.manifest, n, "train") for n in self.names]
        for name, ds in zip(self.names, self.datasets):
            if len(ds) == 0:
                raise XmodelError(f"mixture: source {name} has weight {weights[name]:g} but no training sequences "
                                  f"in {self.manifest.path} (too little data for one {ds.seq_len}-token sequence?)")
        self.seq_len = self.manifest.seq_len
        self.tokenizer_hash = self.manifest.tokenizer_hash
        self._template = stratified_slots([self.weights[n] for n in self.names], self.block)
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
        key = xxhash.xxh3_64_intdigest(f"block:{self.seed}:{k}".encode())
        sources = self._template[permute(np.arange(self.block), self.block, key).astype(np.int64)]
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
                out[m] = permute(within[m], n, key).astype(np.int64)
            seq[sel] = out
        return src, seq

    # ---- batches -------------------------------------------------------------------------------------------
    def arrays(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids int64[count, seq_len], labels int64, IGNORE_INDEX on masked tokens) as numpy arrays."""
        src, seq = self.assignments(start, count)
        ids = np.empty((count, self.seq_len), dtype=np.int64)
        labels = np.empty((count, self.seq_len), dtype=np.int64)
        for s in np.unique(src):
            sel = np.nonzero(src == s)[0]
            rows, mask = self.datasets[s].get_many(seq[sel])
            ids[sel] = rows
            labels[sel] = labels_from_mask(rows, mask)
        return ids, labels

    def batch(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """Positions start..start+count-1 as the batch contract (`batches`): labels are input_ids except
        IGNORE_INDEX on the prompt tokens of SFT data."""
        return as_batch(*self.arrays(start, count))

    def shares(self, start: int, count: int) -> dict[str, float]:
        """Realised share of each source among positions start..start+count-1 (sequences = tokens)."""
        src, _ = self.assignments(start, count)
        counts = np.bincount(src, minlength=len(self.names))
        return {n: float(c) / max(1, count) for n, c in zip(self.names, counts)}


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
    return MixtureSampler(manifest, weights, seed=seed, block=block, stage=stage)


# ---- the record a training run keeps ----------------------------------------------------------------------

def mixture_record(source) -> dict | None:
    """What a run trained on, for its config.json: the prepared directory, stage, seed, and per source the
    configured share and the share every block of positions actually holds (whole sequences per block). None
    for a batch source that is not a mixture (synthetic data, tests)."""
    if not isinstance(source, MixtureSampler):
        return None
    return {"prepared": str(Path(source.manifest.path).resolve()), "tokenizer_hash": source.tokenizer_hash,
            "seq_len": source.seq_len, "stage": source.stage, "seed": source.seed, "block": source.block,
            "sources": {name: {"weight": source.weights[name], "per_block": int(n), "share": int(n) / source.block,
                               "train_sequences": len(ds)}
                        for name, n, ds in zip(source.names, source.per_block, source.datasets)}}


def load_mixture_record(run: str | os.PathLike) -> dict:
    """The mixture recorded in a run directory's config.json (or that file itself); one-line error when absent."""
    path = Path(run)
    if path.is_dir():
        path = path / RUN_CONFIG
    if not path.is_file():
        raise XmodelError(f"{run}: no such run directory or config.json")
    try:
        record = json.loads(path.read_text(encoding="utf-8")).get(RECORD_KEY)
    except (json.JSONDecodeError, AttributeError):
        raise XmodelError(f"{path}: not a run's config.json") from None
    if not isinstance(record, dict):
        raise XmodelError(f"{path}: no mixture recorded (the run did not train on prepared data, or predates the "
                          f"record)")
    return record
