"""The batch contract between the data and the training loop.

A batch source is anything with `seq_len` and `batch(start, count)`: sequences start … start+count−1 of a fixed
order, as ``{"input_ids", "labels"}`` LongTensors of shape (count, seq_len). `labels` equal `input_ids` except
`IGNORE_INDEX` on tokens that are not trained on (SFT prompts); the model shifts them itself. The mixture
sampler, the held-out reader and the wind tunnel's synthetic data produce it; the trainer and the evaluations
read it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

IGNORE_INDEX = -100  # "no loss here": the value transformers and torch's cross_entropy skip


class BatchSource(Protocol):
    """Sequences by position: what the training loop and the held-out evaluations read."""

    seq_len: int

    def batch(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """Sequences start … start+count−1 as input_ids and labels, both LongTensor (count, seq_len)."""


def labels_from_mask(ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Labels for token rows: the ids where the loss mask is set, IGNORE_INDEX elsewhere (no mask: every token).

    Always a new array, so labels never share memory with the input ids they came from.
    """
    return ids.copy() if mask is None else np.where(mask, ids, IGNORE_INDEX)


def as_batch(ids: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """The contract's dict from numpy rows (int64, as the model's embedding lookup wants)."""
    return {"input_ids": torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
            "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))}


def count_targets(labels: torch.Tensor) -> int:
    """Tokens a batch's loss is taken on: labels after the first position (no token predicts it), not ignored."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
