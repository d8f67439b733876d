"""Packed shards: fixed-length token sequences in flat memory-mappable files; refusing shards a model cannot use.

Layout of a prepared directory (`manifest.py` writes the two JSON files)::

    manifest.json                      # tokenizer hash, seq_len, dtype, per-source counts, dedup, data config
    sources/<name>/index.json          # this source's shards (a `PackedDataset` opens it)
    sources/<name>/train-00003.bin     # uint16 (vocab <= 65,536) or uint32, shape [sequences, seq_len]
    sources/<name>/train-00003.mask    # SFT sources only: np.packbits of the loss mask, [sequences, seq_len/8]
    sources/<name>/heldout-00003.bin   # held-out documents of the same source, never in training batches

Documents are concatenated with an EOS after each and cut into seq_len pieces; the last partial piece of a
task's stream is dropped (counted as `tokens_dropped`). Every file is written under a temporary name and
renamed when complete, so a killed run never leaves a truncated shard behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import XmodelError
from ..tokenizer.loading import check_vocab_fits, tokenizer_hash
from .manifest import INDEX, SPLITS, Manifest, SplitStats, load_index, load_manifest


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# ---- writing ------------------------------------------------------------------------------------------------

class ShardWriter:
    """Packs a stream of documents into seq_len rows and writes them to ``<base>.bin`` (and ``.mask``)."""

    def __init__(self, base: Path, seq_len: int, dtype: np.dtype, with_mask: bool, flush_rows: int = 256):
        self.base, self.seq_len, self.dtype, self.with_mask = base, seq_len, dtype, with_mask
        self.flush_tokens = flush_rows * seq_len
        self._ids: list[np.ndarray] = []
        self._mask: list[np.ndarray] = []
        self._pending = 0
        self.sequences = 0
        self.tokens_in = 0
        self.documents = 0
        self._files = None

    def _open(self):
        self.base.parent.mkdir(parents=True, exist_ok=True)
        bin_tmp = self.base.with_name(self.base.name + ".bin.tmp")
        mask_tmp = self.base.with_name(self.base.name + ".mask.tmp") if self.with_mask else None
        self._files = (open(bin_tmp, "wb"), open(mask_tmp, "wb") if mask_tmp else None)

    def add(self, ids: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Append one document's tokens (EOS included) and, for SFT sources, its loss mask."""
        self._ids.append(ids)
        if self.with_mask:
            self._mask.append(mask if mask is not None else np.ones(len(ids), dtype=bool))
        self._pending += len(ids)
        self.tokens_in += len(ids)
        self.documents += 1
        if self._pending >= self.flush_tokens:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._ids:
            return
        ids = np.concatenate(self._ids)
        rows = len(ids) // self.seq_len
        if rows:
            if self._files is None:
                self._open()
            cut = rows * self.seq_len
            self._files[0].write(ids[:cut].astype(self.dtype, copy=False).tobytes())
            if self.with_mask:
                mask = np.concatenate(self._mask)
                self._files[1].write(np.packbits(mask[:cut].reshape(rows, self.seq_len), axis=1).tobytes())
                self._mask = [mask[cut:]]
            self.sequences += rows
            ids = ids[cut:]
        self._ids = [ids]
        self._pending = len(ids)

    def close(self) -> dict:
        """Write the last full rows, rename the files into place; returns this shard's entry for the index."""
        self._flush(final=True)
        entry = {"file": None, "mask": None, "sequences": self.sequences, "documents": self.documents,
                 "tokens_in": self.tokens_in, "tokens_dropped": self._pending}
        if self._files is not None:
            for f in self._files:
                if f is not None:
                    f.close()
            os.replace(self.base.with_name(self.base.name + ".bin.tmp"), self.base.with_name(self.base.name + ".bin"))
            entry["file"] = self.base.name + ".bin"
            if self.with_mask:
                os.replace(self.base.with_name(self.base.name + ".mask.tmp"),
                           self.base.with_name(self.base.name + ".mask"))
                entry["mask"] = self.base.name + ".mask"
        return entry


# ---- reading ------------------------------------------------------------------------------------------------

class PackedDataset:
    """The packed sequences of one source and split, memory-mapped.

        ds = PackedDataset("prepared/sources/en")            # or PackedDataset("prepared", source="en")
        ds.seq_len, ds.tokenizer_hash, len(ds)
        ds[i] → {"input_ids": int64[seq_len], "loss_mask": bool[seq_len] or None}

    `loss_mask` is None for pretraining sources (every token is trained); for SFT sources False marks prompt
    tokens. Files are opened on first access, so a dataset can be handed to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", source: str | None = None):
        path = Path(path)
        if source is not None:
            path = path / "sources" / source
        if split not in SPLITS:
            raise XmodelError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
        self.path = path
        self.split = split
        self.index = load_index(path)
        self.name = self.index["name"]
        self.seq_len = int(self.index["seq_len"])
        self.dtype = np.dtype(self.index["dtype"])
        self.tokenizer_hash = self.index["tokenizer_hash"]
        self.vocab_size = int(self.index["vocab_size"])
        self.shards = list(SplitStats.from_dict(self.index[split]).shards)
        self.has_mask = bool(self.index.get("has_mask"))
        counts = np.array([s["sequences"] for s in self.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._maps: list | None = None

    @classmethod
    def of(cls, manifest: Manifest, source: str, split: str = "train") -> PackedDataset:
        """One source's split of a prepared directory (one-line error for a source it does not hold)."""
        manifest.require(source)
        return cls(manifest.path, split=split, source=source)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _open(self) -> list:
        if self._maps is None:
            maps = []
            for s in self.shards:
                f = self.path / s["file"]
                expected = s["sequences"] * self.seq_len * self.dtype.itemsize
                if not f.is_file() or f.stat().st_size != expected:
                    raise XmodelError(f"{f}: missing or of the wrong size (expected {expected} bytes); "
                                      f"rerun `xmodel data prepare`")
                ids = np.memmap(f, dtype=self.dtype, mode="r", shape=(s["sequences"], self.seq_len))
                mask = None
                if s.get("mask"):
                    mask = np.memmap(self.path / s["mask"], dtype=np.uint8, mode="r",
                                     shape=(s["sequences"], (self.seq_len + 7) // 8))
                maps.append((ids, mask))
            self._maps = maps
        return self._maps

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for {self.name}/{self.split} ({n} sequences)")
        i = i % n
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return shard, i - int(self._starts[shard])

    def __getitem__(self, i: int) -> dict:
        shard, row = self._locate(int(i))
        ids, mask = self._open()[shard]
        out = {"input_ids": np.asarray(ids[row], dtype=np.int64), "loss_mask": None}
        if self.has_mask:
            out["loss_mask"] = (np.unpackbits(mask[row])[: self.seq_len].astype(bool) if mask is not None
                                else np.ones(self.seq_len, dtype=bool))
        return out

    def get_many(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(int64[len(indices), seq_len], bool mask or None) for a batch of indices."""
        indices = np.asarray(indices, dtype=np.int64)
        ids = np.empty((len(indices), self.seq_len), dtype=np.int64)
        mask = np.ones((len(indices), self.seq_len), dtype=bool) if self.has_mask else None
        maps = self._open()
        shards = np.searchsorted(self._starts, indices, side="right") - 1
        for shard in np.unique(shards):
            sel = np.nonzero(shards == shard)[0]
            rows = indices[sel] - self._starts[shard]
            sids, smask = maps[shard]
            ids[sel] = sids[rows]
            if mask is not None and smask is not None:
                mask[sel] = np.unpackbits(smask[rows], axis=1)[:, : self.seq_len].astype(bool)
        return ids, mask


# ---- checks against a tokenizer and a model ---------------------------------------------------------------

def _hash_and_vocab_of(prepared) -> tuple[str, int, str]:
    if isinstance(prepared, PackedDataset):
        return prepared.tokenizer_hash, prepared.vocab_size, str(prepared.path)
    if isinstance(prepared, Manifest):
        return prepared.tokenizer_hash, prepared.vocab_size, str(prepared.path)
    p = Path(prepared)
    if (p / INDEX).is_file():
        ds = PackedDataset(p)
        return ds.tokenizer_hash, ds.vocab_size, str(p)
    m = load_manifest(p)
    return m.tokenizer_hash, m.vocab_size, str(p)


def check_tokenizer(prepared, tokenizer) -> None:
    """Refuse shards built with a different tokenizer than `tokenizer` (a directory, a tokenizers.Tokenizer or
    a transformers fast tokenizer). `prepared`: a prepared dir, a source dir, a Manifest or a PackedDataset."""
    built, vocab, where = _hash_and_vocab_of(prepared)
    mine = tokenizer_hash(tokenizer)
    if built != mine:
        raise XmodelError(f"{where}: shards were tokenised with tokenizer {built} ({vocab} entries), not with this "
                          f"tokenizer {mine}; rerun `xmodel data prepare` with it")


def check_vocab(prepared, model_vocab_size: int) -> None:
    """Refuse shards whose token ids may not fit a model's embedding table."""
    _, vocab, where = _hash_and_vocab_of(prepared)
    check_vocab_fits(vocab, model_vocab_size, tokenizer=f"{where}: the shards' tokenizer", model="model.vocab_size")
