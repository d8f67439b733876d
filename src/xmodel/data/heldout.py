"""The held-out split: which documents it holds, and reading its packed sequences as one batch source.

Which: a document is held out when the high half of its 128-bit content hash falls in the first `fraction` of the
64-bit range (`is_heldout`). The choice depends on the text alone — never on order, tasks or workers — so the
tokenizer's training sample, the SFT few-shot pool and the training shards all leave out the same documents, and
`prepare` packs them (up to `data.heldout.max_tokens` per source) into separate held-out shards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import XmodelError
from .batches import as_batch, labels_from_mask
from .manifest import Manifest
from .shards import PackedDataset


def is_heldout(content_hash_high: int, fraction: float) -> bool:
    """The held-out rule, on the high half of a document's `simhash.content_hash`."""
    return content_hash_high < fraction * 2.0**64


class HeldoutSource:
    """The held-out sequences of some prepared sources as one batch source, interleaved source by source so that
    the first N sequences cover every source (an eval loss on `train.eval_sequences` of them is balanced).
    Positions past the end wrap around.

        HeldoutSource(sampler)                                  # the sources of a mixture (a MixtureSampler)
        HeldoutSource.of_sources(manifest, ["en", "sft.math"])  # any prepared sources
    """

    def __init__(self, sampler):
        self._open(sampler.manifest, sampler.names)

    @classmethod
    def of_sources(cls, manifest: Manifest, names: Sequence[str]) -> HeldoutSource:
        source = cls.__new__(cls)
        source._open(manifest, names)
        return source

    def _open(self, manifest: Manifest, names: Sequence[str]) -> None:
        self.seq_len = manifest.seq_len
        self.datasets = [PackedDataset.of(manifest, n, "heldout") for n in names
                         if manifest.split(n, "heldout").sequences > 0]
        if not self.datasets:
            raise XmodelError(f"{manifest.path}: no held-out sequences for {', '.join(names)} (data.heldout)")
        # Round-robin over (dataset, row): row i of every dataset that has one, then row i + 1, ...
        order = [(k, i) for i in range(max(map(len, self.datasets)))
                 for k, d in enumerate(self.datasets) if i < len(d)]
        self._dataset_of, self._row_of = (np.array(column, dtype=np.int64) for column in zip(*order))

    def __len__(self) -> int:
        return len(self._row_of)

    def batch(self, start: int, count: int) -> dict[str, torch.Tensor]:
        positions = np.arange(start, start + count) % len(self)
        which, rows = self._dataset_of[positions], self._row_of[positions]
        ids = np.empty((count, self.seq_len), dtype=np.int64)
        labels = np.empty_like(ids)
        for k in np.unique(which):
            sel = np.nonzero(which == k)[0]
            rows_k, mask = self.datasets[k].get_many(rows[sel])
            ids[sel] = rows_k
            labels[sel] = labels_from_mask(rows_k, mask)
        return as_batch(ids, labels)
