"""A keyed pseudo-random permutation of [0, n) that needs no table: the mixture sampler's epoch order and the
dedup stage's shuffled buckets.

Our own, not numpy's Generator: numpy does not promise the same stream across versions, and a resumed run must
read the same data (and a rerun of prepare find the same buckets) after an upgrade.
"""

from __future__ import annotations

import math

import numpy as np
import xxhash

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _round_fn(x: np.ndarray, key: np.uint64) -> np.ndarray:
    h = x ^ key
    h = (h ^ (h >> np.uint64(30))) * _M1
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(31))


def permute(index: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed pseudo-random permutation of [0, n), applied to `index` (array, values in [0, n)).

    Four-round Feistel network on the smallest even bit width covering n, with cycle walking for values that
    land outside [0, n): a bijection on [0, n).
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
