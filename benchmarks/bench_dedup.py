"""Near-duplicate detection: our SimHash + banded index against datasketch's MinHashLSH, same documents, same run.

Documents: every document of the data root's English, Chinese and code corpora with at least 200 words (a CJK
character counts as a word), plus a copy of a sample of them with 3 random word edits (the planted
near-duplicates). Both methods see the same features (word 2-grams) and run in one process:
- ours: `SimHasher.signatures` + `dedup.find_pairs` + `dedup.decide_removals` at the default settings
  (64-bit SimHash, Hamming threshold 7, blocks chosen automatically).
- datasketch: `MinHash(num_perm=128)` per document (`update_batch`), `MinHashLSH(threshold=0.7)`, insert all,
  query all.
Reported: documents per second (end to end: features → signatures → index → pairs) and recall on the planted
pairs. Runs alternate; medians. Goal: >= 3x faster at >= 0.95 recall.

    python benchmarks/bench_dedup.py [--planted 1500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_dedup import edit_words  # noqa: E402  (the same planting as the test)


def load(root: Path) -> list[str]:
    from xmodel.data.simhash import words

    texts = []
    for rel in ("corpora/en/english_public_domain.jsonl.gz", "corpora/zh/chinese_prose_clue_lcsts.jsonl.gz",
                "corpora/code/code_corpus.jsonl.gz"):
        with gzip.open(root / rel, "rt", encoding="utf-8") as f:
            texts += [t for t in (json.loads(line)["text"] for line in f) if len(words(t)) >= 200]
    return list(dict.fromkeys(texts))


def ours(texts: list[str]):
    from xmodel.data.config import DedupConfig
    from xmodel.data.dedup import decide_removals, find_pairs
    from xmodel.data.simhash import SimHasher, content_hash

    dcfg = DedupConfig()
    t0 = time.perf_counter()
    sig, nfeat = SimHasher(dcfg.shingle).signatures(texts)
    hashes = [content_hash(t) for t in texts]
    sigs = {"uid": np.arange(len(texts), dtype=np.uint64), "hi": np.array([h[0] for h in hashes], np.uint64),
            "lo": np.array([h[1] for h in hashes], np.uint64), "sig": sig, "nfeat": nfeat}
    pairs = find_pairs(sigs, dcfg, 0, 1)
    decide_removals(sigs, pairs, dcfg, {0: "all"})
    return time.perf_counter() - t0, {tuple(p) for p in pairs.tolist()}


def minhash_lsh(texts: list[str], num_perm: int, threshold: float):
    from datasketch import MinHash, MinHashLSH

    from xmodel.data.simhash import words

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sketches = []
    for i, t in enumerate(texts):
        ws = words(t)
        shingles = {f"{a} {b}".encode() for a, b in zip(ws, ws[1:])} or {t.encode()}
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingles))
        lsh.insert(i, m)
        sketches.append(m)
    pairs = set()
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    return time.perf_counter() - t0, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root")
    ap.add_argument("--planted", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--lsh-threshold", type=float, default=0.7)
    args = ap.parse_args()
    from xmodel.data.root import data_root

    originals = load(data_root(args.data_root))
    rng = random.Random(0)
    chosen = rng.sample(range(len(originals)), min(args.planted, len(originals)))
    texts = originals + [edit_words(originals[i], 3, rng) for i in chosen]
    planted = {(i, len(originals) + k) for k, i in enumerate(chosen)}
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts):,} documents ({len(originals):,} real with >= 200 words + {len(planted):,} planted "
          f"3-word edits), {mb:.1f} MB")
    times = {"ours": [], "datasketch": []}
    found = {}
    for r in range(args.rounds):
        for name in (("ours", "datasketch") if r % 2 == 0 else ("datasketch", "ours")):
            secs, pairs = ours(texts) if name == "ours" else minhash_lsh(texts, args.num_perm, args.lsh_threshold)
            times[name].append(secs)
            found[name] = pairs
            print(f"round {r}: {name:10s} {len(texts) / secs:8.0f} docs/s  recall "
                  f"{len(planted & pairs) / len(planted):.3f}  pairs {len(pairs):,}")
    rate = {k: len(texts) / statistics.median(v) for k, v in times.items()}
    recall = {k: len(planted & found[k]) / len(planted) for k in found}
    print(f"median: ours {rate['ours']:.0f} docs/s (recall {recall['ours']:.3f}), datasketch MinHashLSH "
          f"(num_perm {args.num_perm}, threshold {args.lsh_threshold}) {rate['datasketch']:.0f} docs/s "
          f"(recall {recall['datasketch']:.3f}); speed ratio {rate['ours'] / rate['datasketch']:.2f}x")


if __name__ == "__main__":
    main()
