"""What wind-tunnel runs train and evaluate on.

Every experiment asks a `TuneData` for batch sources (`xmodel.data.batches.BatchSource`: `seq_len`,
`batch(start, count)`), so the experiments never care where the tokens come from:

* `stable(seed)` – the stable-stage mixture (what μP trials and the transfer sweep train on);
* `heldout("pretrain")` / `heldout(category)` – held-out sequences (never trained on) for objectives;
* `decay(sft_share, categories, sequences, seed)` – a decay-stage mixture, stratified so that the first
  `sequences` positions hold each source's share exactly (up to rounding to whole sequences).

`open_data(spec)` picks the implementation: a directory written by `xmodel data prepare` (the real corpora
and SFT sets of the data root), or "synthetic" – learnable token patterns for tests and smoke runs that need
no data at all.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..config.core import build_section
from ..data.batches import IGNORE_INDEX, BatchSource
from ..data.config import SFT_CATEGORIES, DataConfig
from ..data.heldout import HeldoutSource
from ..data.manifest import load_manifest
from ..data.mixture import build_sampler, stratified_slots
from ..data.weights import decay_shares, normalise_weights
from ..errors import XmodelError


class TuneData(Protocol):
    seq_len: int
    vocab_size: int
    categories: list[str]        # SFT categories that have data

    def stable(self, seed: int = 0) -> BatchSource: ...

    def heldout(self, name: str = "pretrain") -> BatchSource: ...

    def heldout_size(self, name: str = "pretrain") -> int: ...

    def decay(self, sft_share: float, categories: dict[str, float], sequences: int, seed: int = 0): ...


def decay_weights(sft_share: float, categories: dict[str, float]) -> dict[str, float]:
    """Source → share of a decay mixture: (1 − sft_share) pretraining, sft_share split over the categories."""
    return decay_shares(sft_share, {"pretrain": 1.0}, categories, "mixture")


def sft_share_of(shares: dict[str, float]) -> float:
    """The SFT part of realised source shares (sources named sft.<category>)."""
    return sum(v for k, v in shares.items() if k.startswith("sft."))


# ---- synthetic -------------------------------------------------------------------------------------------

class PatternFamily:
    """Sequences fixed by (family, seed, index): "pretrain" is arithmetic progressions modulo the vocabulary,
    category k repeats a random motif of length k + 3 (copying, learnable in context) with the first motif
    masked out of the loss (IGNORE_INDEX) like an SFT prompt. Distinct skills, so a category's held-out loss responds
    to its share of the training mixture."""

    def __init__(self, family: str, vocab: int, seq_len: int, seed: int):
        self.family, self.vocab, self.seq_len, self.seed = family, vocab, seq_len, seed
        self.kind = -1 if family == "pretrain" else SFT_CATEGORIES.index(family.removeprefix("sft."))

    def row(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + i) * 7 + self.kind + 1)
        t = torch.arange(self.seq_len)
        if self.kind < 0:
            a = int(torch.randint(0, self.vocab, (1,), generator=g))
            b = int(torch.randint(1, 8, (1,), generator=g))
            ids = (a + b * t) % (self.vocab - 3) + 3
            return ids, ids.clone()
        period = self.kind + 3
        motif = torch.randint(3, self.vocab, (period,), generator=g)
        ids = motif[t % period]
        labels = ids.clone()
        labels[:period] = IGNORE_INDEX
        return ids, labels

    def batch(self, start: int, count: int) -> dict:
        rows = [self.row(i) for i in range(start, start + count)]
        return {"input_ids": torch.stack([r[0] for r in rows]), "labels": torch.stack([r[1] for r in rows])}


class StratifiedMixture:
    """Sources by position: each block of `block` positions holds round(share × block) sequences of every
    source, in an order shuffled per block; a source's n-th draw is its sequence n. (The synthetic stand-in for
    the data pipeline's mixture sampler, which works the same way over packed shards.)"""

    def __init__(self, sources: dict[str, BatchSource], weights: dict[str, float], block: int, seed: int = 0):
        shares = normalise_weights(weights, "mixture")
        self.names = list(shares)
        self.sources = [sources[n] for n in self.names]
        self.seq_len = self.sources[0].seq_len
        self.block, self.seed = int(block), int(seed)
        self.template = stratified_slots(list(shares.values()), self.block)
        self.per_block = np.bincount(self.template, minlength=len(self.names))

    def assignments(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.arange(start, start + count)
        src, draw = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64)
        for k in np.unique(pos // self.block):
            order = np.random.default_rng([self.seed, int(k)]).permutation(self.template)
            rank = np.empty(self.block, dtype=np.int64)
            for s in range(len(self.names)):
                where = np.nonzero(order == s)[0]
                rank[where] = np.arange(len(where)) + k * self.per_block[s]
            sel = np.nonzero(pos // self.block == k)[0]
            slots = pos[sel] - k * self.block
            src[sel], draw[sel] = order[slots], rank[slots]
        return src, draw

    def batch(self, start: int, count: int) -> dict:
        src, draw = self.assignments(start, count)
        ids = torch.empty(count, self.seq_len, dtype=torch.long)
        labels = torch.empty_like(ids)
        for j, (s, d) in enumerate(zip(src, draw)):
            b = self.sources[s].batch(int(d), 1)
            ids[j], labels[j] = b["input_ids"][0], b["labels"][0]
        return {"input_ids": ids, "labels": labels}

    def shares(self, start: int, count: int) -> dict[str, float]:
        src, _ = self.assignments(start, count)
        counts = np.bincount(src, minlength=len(self.names))
        return {n: float(c) / max(1, count) for n, c in zip(self.names, counts)}


class SyntheticData:
    """Learnable token patterns (see `PatternFamily`): a stand-in for tests and smoke runs, no data root needed."""

    HELDOUT_SEED = 10_000_019
    HELDOUT_SEQUENCES = 256

    def __init__(self, vocab_size: int = 256, seq_len: int = 64, seed: int = 0):
        self.vocab_size, self.seq_len, self.seed = vocab_size, seq_len, seed
        self.categories = list(SFT_CATEGORIES)
        self.description = f"synthetic patterns (vocab {vocab_size}, seq_len {seq_len})"

    def _family(self, name: str, seed: int) -> PatternFamily:
        return PatternFamily(name, self.vocab_size, self.seq_len, seed)

    def stable(self, seed: int = 0) -> BatchSource:
        return self._family("pretrain", self.seed + seed)

    def heldout(self, name: str = "pretrain") -> BatchSource:
        self._check(name)
        return self._family(name, self.HELDOUT_SEED)

    def heldout_size(self, name: str = "pretrain") -> int:
        self._check(name)
        return self.HELDOUT_SEQUENCES

    def decay(self, sft_share: float, categories: dict[str, float], sequences: int, seed: int = 0):
        weights = decay_weights(sft_share, categories)
        sources = {n: self._family(n, self.seed + seed + 1) for n in weights}
        return StratifiedMixture(sources, weights, block=max(1, sequences), seed=self.seed + seed)

    def _check(self, name: str) -> None:
        if name != "pretrain" and name not in self.categories:
            raise XmodelError(f"held-out set {name!r}: not 'pretrain' or an SFT category")


# ---- prepared corpora (xmodel data prepare) ---------------------------------------------------------------

class PreparedData:
    """The output of `xmodel data prepare`: packed corpora (stable stage) and SFT categories (decay stage),
    each with held-out sequences chosen by content hash at prepare time. The mixtures are those of `config`
    (the run's `data` section) or, when it lists no sources, those the data was prepared with."""

    def __init__(self, prepared: str | Path, config=None):
        self.manifest = load_manifest(prepared)
        self.path = Path(prepared)
        if config is None or not config.sources:
            config = build_section(DataConfig, self.manifest.config, "data")
        if config.seq_len != self.manifest.seq_len:
            config = dataclasses.replace(config, seq_len=self.manifest.seq_len)
        self.config = config
        self.seq_len = self.manifest.seq_len
        self.vocab_size = self.manifest.vocab_size
        self.pretrain_sources = [s.name for s in self.config.sources if s.name in self.manifest.sources]
        self.categories = [c for c in SFT_CATEGORIES if f"sft.{c}" in self.manifest.sources]
        self.description = f"{self.path} ({', '.join(self.pretrain_sources)}; SFT: {', '.join(self.categories)})"

    def stable(self, seed: int = 0) -> BatchSource:
        return build_sampler(self.manifest, self.config, stage="stable", seed=seed)

    def heldout(self, name: str = "pretrain") -> BatchSource:
        """The held-out sequences of the pretraining sources (interleaved) or of one SFT category."""
        if name == "pretrain":
            names = self.pretrain_sources
        elif name in self.categories:
            names = [f"sft.{name}"]
        else:
            raise XmodelError(f"held-out set {name!r}: not 'pretrain' or a prepared SFT category "
                              f"({', '.join(self.categories) or 'none'})")
        if not sum(self.manifest.split(n, "heldout").sequences for n in names):
            raise XmodelError(f"{self.path}: no held-out sequences for {name!r} (prepare with data.heldout.fraction "
                              f"> 0 and enough documents)")
        return HeldoutSource.of_sources(self.manifest, names)

    def heldout_size(self, name: str = "pretrain") -> int:
        return len(self.heldout(name))

    def decay(self, sft_share: float, categories: dict[str, float], sequences: int, seed: int = 0):
        missing = [c for c, w in categories.items() if w > 0 and c not in self.categories]
        if missing and sft_share > 0:
            raise XmodelError(f"{self.path}: no prepared SFT data for {', '.join(missing)}")
        decay = dataclasses.replace(self.config.decay, sft_share=sft_share,
                                    categories={c: w for c, w in categories.items() if w > 0} or
                                    {c: 1.0 for c in self.categories})
        cfg = dataclasses.replace(self.config, decay=decay)
        # One block = the whole branch, so the realised shares are the asked ones up to whole sequences.
        return build_sampler(self.manifest, cfg, stage="decay", seed=seed, block=max(1, sequences))


def open_data(spec: str, config=None, *, vocab_size: int = 256, seq_len: int = 64) -> TuneData:
    """"synthetic" or a prepared data directory (`config`: the run's data section, see `PreparedData`)."""
    if spec == "synthetic":
        return SyntheticData(vocab_size=vocab_size, seq_len=seq_len)
    path = Path(spec)
    if not path.is_dir():
        raise XmodelError(f"--data {spec}: no such directory (run `xmodel data prepare`, or use --data synthetic)")
    return PreparedData(path, config)
