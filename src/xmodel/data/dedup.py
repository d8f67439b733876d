"""Corpus-level deduplication on top of the signatures: exact duplicates, then near-duplicate clusters.

The pipeline (`prepare.py`) runs it in three datatrove stages, like datatrove's own MinHash dedup:

1. signatures — every task writes, for its documents, uid + 128-bit content hash + SimHash + feature count.
2. pairs      — the documents left after exact dedup are cut into buckets of `bucket_size` (per round); each
                task takes some (round, bucket) units and writes the near-duplicate pairs it finds there.
3. clusters   — one task joins the pairs into connected components, keeps the earliest document of each
                (lowest uid: first source in the config, first file, first line) and writes the uids to drop.

Exact duplicates keep their earliest copy too. Both counts are reported per source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import save_array_atomic, save_arrays_atomic
from .ingest import SOURCE_SHIFT
from .permute import permute
from .simhash import cluster_minimum, near_duplicate_pairs

FIELDS = ("uid", "hi", "lo", "sig", "nfeat")
REMOVED = "removed.npy"


# ---- the dedup folder: one file per task and stage (written whole, see `atomic`) ----------------------------

def save_signatures(folder: Path, rank: int, uid, hi, lo, sig, nfeat) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_arrays_atomic(folder / f"sig-{rank:05d}.npz", uid=np.asarray(uid, np.uint64), hi=np.asarray(hi, np.uint64),
                       lo=np.asarray(lo, np.uint64), sig=np.asarray(sig, np.uint64),
                       nfeat=np.asarray(nfeat, np.uint32))


def load_signatures(folder: Path) -> dict[str, np.ndarray]:
    """All tasks' signatures, sorted by uid."""
    parts = [np.load(f) for f in sorted(folder.glob("sig-*.npz"))]
    if not parts:
        return {k: np.zeros(0, np.uint64 if k != "nfeat" else np.uint32) for k in FIELDS}
    data = {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}
    order = np.argsort(data["uid"], kind="stable")
    return {k: v[order] for k, v in data.items()}


def save_pairs(folder: Path, rank: int, pairs: np.ndarray) -> None:
    save_array_atomic(folder / f"pairs-{rank:05d}.npy", pairs)


def load_pairs(folder: Path) -> np.ndarray:
    """Every task's near-duplicate uid pairs."""
    parts = [np.load(f) for f in sorted(folder.glob("pairs-*.npy"))]
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)


def save_removed(folder: Path, removed: np.ndarray) -> None:
    save_array_atomic(folder / REMOVED, removed)


def load_removed(folder: Path) -> np.ndarray:
    f = folder / REMOVED
    return np.load(f) if f.is_file() else np.zeros(0, np.uint64)


# ---- deciding ---------------------------------------------------------------------------------------------

def exact_duplicates(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Boolean mask of documents whose exact text appeared earlier (inputs sorted by uid)."""
    order = np.lexsort((np.arange(len(hi)), lo, hi))
    same = np.zeros(len(hi), dtype=bool)
    if len(hi) > 1:
        same[1:] = (hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
    dup = np.zeros(len(hi), dtype=bool)
    dup[order[same]] = True
    return dup


def work_units(n: int, bucket_size: int, rounds: int) -> list[tuple[int, int]]:
    buckets = max(1, -(-n // bucket_size))
    if buckets == 1:
        rounds = 1  # one bucket holds everything: more rounds would find the same pairs
    return [(r, b) for r in range(rounds) for b in range(buckets)]


def bucket_members(n: int, round_: int, bucket: int, bucket_size: int) -> np.ndarray:
    """Positions (in uid order) of the documents in one bucket of one round."""
    if round_ == 0:
        order = np.arange(n)
    else:  # a keyed permutation (ours, so the buckets do not depend on the numpy version)
        order = permute(np.arange(n), n, key=round_).astype(np.int64)
    return np.sort(order[bucket * bucket_size:(bucket + 1) * bucket_size])


BAND_BITS = 20  # a signature bucket key: 20 bits of the signature, ~1M buckets


def signature_buckets(sig: np.ndarray, round_: int, bucket_count: int) -> list[np.ndarray]:
    """The "1M hash buckets" reading: round r keys each signature by its 20-bit band starting at bit 20·r (mod
    64), taken modulo `bucket_count`; documents sharing a key are compared. Two signatures within Hamming
    distance k < rounds agree on at least one of `rounds` disjoint bands (pigeonhole), so 3 rounds find every
    pair within distance 2 and most within the threshold."""
    shift = np.uint64((BAND_BITS * round_) % 64)
    rotated = (sig >> shift) | (sig << (np.uint64(64) - shift)) if shift else sig
    keys = (rotated & np.uint64((1 << BAND_BITS) - 1)) % np.uint64(bucket_count)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    groups = np.split(order, starts[1:])
    return [np.sort(g) for g in groups if len(g) > 1]


def round_groups(sig: np.ndarray, dcfg) -> list[np.ndarray]:
    """Every group of candidate positions to compare, all rounds, in a fixed order (tasks take every k-th)."""
    n = len(sig)
    if dcfg.bucket_reading == "signature":
        return [g for r in range(dcfg.rounds) for g in signature_buckets(sig, r, dcfg.bucket_size)]
    return [bucket_members(n, r, b, dcfg.bucket_size) for r, b in work_units(n, dcfg.bucket_size, dcfg.rounds)]


def candidates(sigs: dict, exact: bool) -> np.ndarray:
    """Positions that take part in near-dedup: all, or those that survived exact dedup."""
    if not exact:
        return np.arange(len(sigs["uid"]))
    return np.nonzero(~exact_duplicates(sigs["hi"], sigs["lo"]))[0]


def find_pairs(sigs: dict, dcfg, rank: int, world_size: int) -> np.ndarray:
    """uid pairs found by this task's (round, bucket) units."""
    keep = candidates(sigs, dcfg.exact)
    found = []
    for unit_index, group in enumerate(round_groups(sigs["sig"][keep], dcfg)):
        if unit_index % world_size != rank:
            continue
        members = keep[group]
        pairs = near_duplicate_pairs(sigs["sig"][members], sigs["nfeat"][members], dcfg.threshold,
                                     short_threshold=dcfg.short_threshold, short_tokens=dcfg.short_tokens,
                                     blocks=dcfg.blocks)
        if len(pairs):
            found.append(sigs["uid"][members[pairs]])
    return np.concatenate(found) if found else np.zeros((0, 2), np.uint64)


def decide_removals(sigs: dict, pairs: np.ndarray, dcfg, source_names: dict[int, str]) -> tuple[np.ndarray, dict]:
    """(sorted uids to drop, report) from the signatures and all near-duplicate pairs."""
    uid = sigs["uid"]
    n = len(uid)
    exact = exact_duplicates(sigs["hi"], sigs["lo"]) if dcfg.exact else np.zeros(n, bool)
    near = np.zeros(n, bool)
    if dcfg.near and len(pairs):
        pos = np.searchsorted(uid, pairs.ravel()).reshape(-1, 2)
        labels = cluster_minimum(n, pos.astype(np.int64))
        near = labels != np.arange(n)
    src = (uid >> np.uint64(SOURCE_SHIFT)).astype(np.int64)
    report: dict = {"documents": {}, "exact_removed": {}, "near_removed": {}, "pairs": int(len(pairs)),
                    "settings": {"exact": dcfg.exact, "near": dcfg.near, "threshold": dcfg.threshold,
                                 "short_threshold": dcfg.short_threshold, "short_tokens": dcfg.short_tokens,
                                 "shingle": dcfg.shingle, "bucket_size": dcfg.bucket_size, "rounds": dcfg.rounds,
                                 "bucket_reading": dcfg.bucket_reading}}
    for index, name in source_names.items():
        sel = src == index
        for key, arr in (("documents", sel), ("exact_removed", sel & exact), ("near_removed", sel & near)):
            report[key][name] = report[key].get(name, 0) + int(arr.sum())
    removed = np.sort(uid[exact | near])
    return removed, report

