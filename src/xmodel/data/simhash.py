"""64-bit SimHash signatures, a banded index for near-duplicate pairs, and exact content hashes.

SimHash (Charikar 2002; Manku et al. 2007 for near-duplicate detection): every word n-gram of a document is
hashed to 64 bits; bit b of the signature is set when more n-grams have bit b set than not. Documents that
share most n-grams get signatures at a small Hamming distance.

Finding all pairs within distance k without comparing every pair: cut the 64 bits into `b` blocks. Two
signatures within distance k differ in at most k blocks, so they agree exactly on at least b - k of them
(pigeonhole). For every choice of b - k blocks, sort the signatures by those blocks and compare only
signatures that agree on them. That is C(b, k) sorts plus the candidate checks: linear in the documents of a
bucket (about N·C(b,k)·N/2^(64(b-k)/b) checks, and b is picked to keep that small).

Words are runs of non-space characters, except that each CJK character is a word of its own, so Chinese text
gets character n-grams. Text is lower-cased first. (`words` gives the same split on Python strings, for
statistics and tests; the signatures find the words on the UTF-8 bytes, vectorised.)
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import xxhash

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
WORD_RE = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_HAS_CJK = re.compile(rf"[{_CJK}]")
# bit table: byte value → its 8 bits (little-endian bit order), for counting set bits per signature position
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.int64)
_MIX1, _MIX2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def words(text: str) -> list[str]:
    text = text.lower()
    return WORD_RE.findall(text) if _HAS_CJK.search(text) else text.split()


def content_hash(text: str) -> tuple[int, int]:
    """128-bit hash of the exact text (two uint64 halves): equal hashes = identical documents."""
    h = xxhash.xxh3_128_intdigest(text.encode("utf-8", "surrogatepass"))
    return h >> 64, h & 0xFFFFFFFFFFFFFFFF


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the n-gram combination over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * _MIX1
    h = h ^ (h >> np.uint64(27))
    h = h * _MIX2
    return h ^ (h >> np.uint64(31))


# Word boundaries at the byte level: ASCII whitespace separates words, and every 3-byte UTF-8 character with
# lead byte E3..ED or EF (U+3000..U+DFFF, U+F000..U+FFFF: CJK ideographs, kana, Hangul, CJK and full-width
# punctuation) is a word of its own.
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 11, 12, 13, 32]] = True
_CJK_LEAD = np.zeros(256, dtype=bool)
_CJK_LEAD[0xE3:0xEE] = True
_CJK_LEAD[0xEF] = True
# Weights of a byte by its position in its word: P^0, P^1, ... (positions past 255 reuse the last weight).
_POLY_POW = np.cumprod(np.concatenate([np.ones(1, np.uint64), np.full(255, 0x100000001B3, dtype=np.uint64)]))
_MAX_BATCH_BYTES = 16 << 20


class SimHasher:
    """Computes signatures for batches of documents, vectorised over the whole batch (no per-word Python).

    Features: word n-grams (`shingle` words; documents with fewer words use their single words), each hashed to
    64 bits — a polynomial hash of the word's lower-cased UTF-8 bytes, combined over the n-gram and finished
    with splitmix64.
    """

    def __init__(self, shingle: int = 2):
        self.shingle = shingle

    def _features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(feature hashes uint64[F], document index int64[F]) of a batch."""
        encoded = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
        lengths = np.array([len(e) + 1 for e in encoded], dtype=np.int64)
        doc_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        buf = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
        space = _SPACE[buf]
        lead = _CJK_LEAD[buf]
        member = lead.copy()
        member[1:] |= lead[:-1]
        member[2:] |= lead[:-2]
        prev_space = np.concatenate([[True], space[:-1]])
        prev_member = np.concatenate([[False], member[:-1]])
        starts = ~space & (prev_space | lead | (prev_member & ~member))
        idx = np.nonzero(~space)[0]
        if len(idx) == 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        first = starts[idx]
        seg = np.nonzero(first)[0]
        # Σ b_j P^(j - word start) over each word's bytes, then mixed
        rel = np.arange(len(idx)) - seg[np.cumsum(first) - 1]
        word = _mix(np.add.reduceat(buf[idx].astype(np.uint64) * _POLY_POW[np.minimum(rel, 255)], seg))
        doc = np.searchsorted(doc_start, idx[seg], side="right") - 1
        n = self.shingle
        counts = np.bincount(doc, minlength=len(texts))
        if n == 1:
            return word, doc
        m = len(word) - n + 1
        feats, fdoc = [], []
        if m > 0:
            h = word[:m].copy()
            for i in range(1, n):
                h = (h * _GOLD) ^ word[i:i + m]
            same = doc[:m] == doc[n - 1:]
            feats.append(_mix(h[same]))
            fdoc.append(doc[:m][same])
        short = counts[doc] < n  # documents with fewer words than the n-gram size: their words are the features
        feats.append(word[short])
        fdoc.append(doc[short])
        return np.concatenate(feats), np.concatenate(fdoc)

    def signatures(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures uint64[n], feature counts uint32[n]) of a batch; an empty text gets (0, 0)."""
        if sum(len(t) for t in texts) * 4 > _MAX_BATCH_BYTES and len(texts) > 1:
            half = len(texts) // 2
            a, b = self.signatures(texts[:half]), self.signatures(texts[half:])
            return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
        feats, doc = self._features(texts)
        counts = np.bincount(doc, minlength=len(texts))
        ones = np.empty((len(texts), 64), dtype=np.int64)
        by = feats.view(np.uint8).reshape(-1, 8)
        # Set bits per position, one byte of the features at a time: a (doc, byte value) histogram times the
        # byte → bits table. Far faster than unpacking every feature to 64 bits.
        for k in range(8):
            hist = np.bincount(doc * 256 + by[:, k], minlength=len(texts) * 256).reshape(len(texts), 256)
            ones[:, 8 * k:8 * k + 8] = hist @ _BYTE_BITS
        majority = (2 * ones > counts[:, None]).astype(np.uint8)
        sigs = np.packbits(majority, axis=1, bitorder="little").view(np.uint64).ravel().copy()
        sigs[counts == 0] = 0
        return sigs, counts.astype(np.uint32)


# ---- the banded index --------------------------------------------------------------------------------------

def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b))


def choose_blocks(threshold: int, n: int) -> int:
    """The block count with the least estimated work (sorts + candidate checks) for n signatures."""
    best, best_cost = threshold + 1, math.inf
    for b in range(threshold + 1, min(64, threshold + 8) + 1):
        tables = math.comb(b, threshold)
        key_bits = 64 * (b - threshold) / b
        cost = tables * (n * max(1.0, math.log2(max(n, 2))) + n * n / 2 ** key_bits)
        if cost < best_cost:
            best, best_cost = b, cost
    return best


def block_masks(blocks: int, threshold: int) -> list[np.uint64]:
    """One mask per table: the bits of b - k of the b blocks."""
    edges = [round(i * 64 / blocks) for i in range(blocks + 1)]
    block_bits = [((1 << (edges[i + 1] - edges[i])) - 1) << edges[i] for i in range(blocks)]
    return [np.uint64(sum(block_bits[i] for i in combo))
            for combo in itertools.combinations(range(blocks), blocks - threshold)]


def near_duplicate_pairs(sigs: np.ndarray, n_features: np.ndarray, threshold: int, *,
                         short_threshold: int | None = None,
                         short_tokens: int = 0, blocks: int | None = None, max_run: int = 4096) -> np.ndarray:
    """All index pairs (i < j) whose signatures are within the distance threshold, as int64[P, 2].

    A pair where either document has fewer than `short_tokens` features uses `short_threshold`. Documents
    without features never pair. Within a run of equal keys, each signature is compared with the next
    `max_run` ones in signature order (all of them unless a run is longer — a safeguard for degenerate data).
    """
    sigs = np.asarray(sigs, dtype=np.uint64)
    n_features = np.asarray(n_features)
    short_threshold = threshold if short_threshold is None else short_threshold
    valid = np.nonzero(n_features > 0)[0]
    if len(valid) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    vs = sigs[valid]
    is_long = n_features[valid] >= short_tokens
    blocks = blocks or choose_blocks(threshold, len(valid))
    found = []
    for mask in block_masks(blocks, threshold):
        key = vs & mask
        order = np.lexsort((vs, key))
        ks, ss = key[order], vs[order]
        active = np.arange(len(order) - 1)
        for d in range(1, min(max_run, len(order) - 1) + 1):
            active = active[active + d < len(order)]
            active = active[ks[active] == ks[active + d]]
            if len(active) == 0:
                break
            i, j = order[active], order[active + d]
            dist = hamming(ss[active], ss[active + d])
            limit = np.where(is_long[i] & is_long[j], threshold, short_threshold)
            hit = dist <= limit
            if hit.any():
                found.append(np.stack([np.minimum(i[hit], j[hit]), np.maximum(i[hit], j[hit])], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.unique(np.concatenate(found), axis=0)
    return valid[pairs].astype(np.int64)


def cluster_minimum(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each of n items, the smallest index in its connected component (union-find by label propagation)."""
    labels = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return labels
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        before = labels.copy()
        m = np.minimum(labels[a], labels[b])
        np.minimum.at(labels, a, m)
        np.minimum.at(labels, b, m)
        while True:  # pointer jumping: labels point at component minima
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels
