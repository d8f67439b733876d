"""Deduplication on real documents: planted near-duplicates are found, distinct documents are kept."""

import gzip
import json
import random
import re

import numpy as np
import pytest

from xmodel.data.config import DedupConfig
from xmodel.data.dedup import decide_removals, exact_duplicates, find_pairs
from xmodel.data.simhash import SimHasher, content_hash, near_duplicate_pairs, words


CJK = re.compile(r"[\u4e00-\u9fff]")
LONG = {"en": "corpora/en/english_public_domain.jsonl.gz", "zh": "corpora/zh/chinese_prose_clue_lcsts.jsonl.gz",
        "code": "corpora/code/code_corpus.jsonl.gz"}
SHORT = ["sft/commonsense/boolq_train.llm_adapters.jsonl", "sft/commonsense/arc_easy_train.llm_adapters.jsonl",
         "sft/code/code_alpaca_2k.jsonl"]


def load(root, rel, n, min_words=0, seed=0):
    opener = gzip.open if rel.endswith(".gz") else open
    with opener(root / rel, "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    texts = [r.get("text") or "\n".join(r[k] for k in ("instruction", "input", "output") if r.get(k)) for r in recs]
    texts = list(dict.fromkeys(t for t in texts if len(words(t)) >= min_words))  # distinct texts only
    return random.Random(seed).sample(texts, min(n, len(texts)))


def edit_words(text: str, k: int, rng: random.Random) -> str:
    """k random word edits (replace, delete or insert); for Chinese a 'word' is a two-character span."""
    if len(CJK.findall(text)) * 3 > len(text):
        chars = list(text)
        for _ in range(k):
            i = rng.randrange(len(chars) - 2)
            op = rng.random()
            if op < 0.4:
                chars[i:i + 2] = list("苹果")
            elif op < 0.7:
                del chars[i:i + 2]
            else:
                chars[i:i] = list("非常")
        return "".join(chars)
    ws = text.split(" ")
    for _ in range(k):
        i = rng.randrange(len(ws))
        op = rng.random()
        if op < 0.4:
            ws[i] = rng.choice(["apple", "river", "zebra", "quickly"])
        elif op < 0.7 and len(ws) > 1:
            del ws[i]
        else:
            ws.insert(i, rng.choice(["very", "indeed", "also"]))
    return " ".join(ws)


def jaccard(a: str, b: str, n: int = 3) -> float:
    wa, wb = words(a), words(b)
    sa, sb = set(zip(*[wa[i:] for i in range(n)])), set(zip(*[wb[i:] for i in range(n)]))
    return len(sa & sb) / max(1, len(sa | sb))


def run_dedup(texts: list[str], dcfg: DedupConfig):
    """The pipeline's own functions, in one process: signatures → pairs → removals."""
    hasher = SimHasher(dcfg.shingle)
    sig, nfeat = hasher.signatures(texts)
    hashes = [content_hash(t) for t in texts]
    sigs = {"uid": np.arange(len(texts), dtype=np.uint64), "hi": np.array([h[0] for h in hashes], np.uint64),
            "lo": np.array([h[1] for h in hashes], np.uint64), "sig": sig, "nfeat": nfeat}
    pairs = find_pairs(sigs, dcfg, 0, 1)
    removed, report = decide_removals(sigs, pairs, dcfg, {0: "all"})
    return set(removed.tolist()), pairs, report


@pytest.fixture(scope="module")
def planted(shared_data):
    rng = random.Random(7)
    originals = []
    for rel in LONG.values():
        originals += load(shared_data, rel, 250, min_words=200)
    copies = [edit_words(t, 3, rng) for t in originals]
    return originals, copies


def test_planted_near_duplicates_are_found_and_distinct_documents_kept(planted):
    originals, copies = planted
    n = len(originals)
    texts = originals + copies
    removed, pairs, report = run_dedup(texts, DedupConfig())
    # Recall: a planted copy is found when it is removed (its cluster keeps an earlier document).
    found = sum(n + i in removed for i in range(n))
    recall = found / n
    # Precision on distinct documents: an original removed although no document of its cluster shares
    # at least half of its word 3-grams with it is a false positive.
    partners: dict[int, set] = {}
    for a, b in pairs.tolist():
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    false_removals = [i for i in range(n) if i in removed
                      and not any(j != n + i and jaccard(texts[i], texts[j]) >= 0.5 for j in partners.get(i, ()))]
    true_dups = sum(1 for i in range(n) if i in removed) - len(false_removals)
    kept_distinct = 1 - len(false_removals) / (n - true_dups)
    print(f"recall {recall:.3f} ({found}/{n}), distinct kept {kept_distinct:.4f}, pairs {len(pairs)}")
    assert recall >= 0.95
    assert kept_distinct >= 0.99
    assert report["near_removed"]["all"] >= found and report["exact_removed"]["all"] == 0


def test_short_templated_records_are_not_merged(shared_data):
    """SFT questions share most of their words (templates); the short-document threshold keeps them apart."""
    texts = []
    for rel in SHORT:
        texts += load(shared_data, rel, 600)
    removed, pairs, _ = run_dedup(texts, DedupConfig())
    false = [i for i in removed if not any(jaccard(texts[i], texts[j]) >= 0.5 for j in range(len(texts)) if j != i)]
    assert len(false) / len(texts) <= 0.01, [texts[i][:80] for i in false[:3]]


def test_exact_duplicates_keep_the_first_copy(planted):
    originals, _ = planted
    texts = originals[:50] + originals[10:20] + originals[:5]
    removed, _, report = run_dedup(texts, DedupConfig(near=False))
    assert removed == set(range(50, 65))
    assert report["exact_removed"]["all"] == 15 and report["near_removed"]["all"] == 0
    hi, lo = np.array([1, 2, 1], np.uint64), np.array([5, 5, 5], np.uint64)
    assert exact_duplicates(hi, lo).tolist() == [False, False, True]


def test_banded_index_finds_exactly_the_brute_force_pairs(planted):
    originals, copies = planted
    texts = originals[:200] + copies[:200]
    sig, nfeat = SimHasher(2).signatures(texts)
    for threshold, blocks in [(7, None), (7, 11), (3, None)]:
        got = {tuple(p) for p in near_duplicate_pairs(sig, nfeat, threshold, blocks=blocks).tolist()}
        dist = np.bitwise_count(sig[:, None] ^ sig[None, :])
        want = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(dist <= threshold, 1)))}
        assert got == want and len(want) >= 100


def test_buckets_and_rounds_limit_the_search(planted):
    """With buckets of 100 documents, a pair split across buckets is found only by a second, shuffled round."""
    originals, copies = planted
    texts = originals[:300] + copies[:300]  # each copy sits 300 positions after its original
    one = run_dedup(texts, DedupConfig(bucket_size=100))[0]
    three = run_dedup(texts, DedupConfig(bucket_size=100, rounds=3))[0]
    full = run_dedup(texts, DedupConfig())[0]
    assert len(one) < len(three) <= len(full)
    assert one <= full and three <= full


def test_signature_buckets_reading_finds_close_pairs_with_rounds(planted):
    """The other reading of "bucket size of 1 million": 2^20-key hash buckets on 20-bit bands of the signature.
    One round compares only documents that agree on one band; three disjoint bands find every pair within
    Hamming distance 2 (pigeonhole), and the pairs found are a subset of the full search's."""
    from xmodel.data.dedup import signature_buckets

    originals, copies = planted
    texts = originals[:300] + copies[:300]
    sig, _ = SimHasher(2).signatures(texts)
    dist = np.bitwise_count(sig[:, None] ^ sig[None, :])
    close = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(dist <= 2, 1)))}
    together = set()
    for r in range(3):
        for group in signature_buckets(sig, r, 1 << 20):
            together |= {(int(a), int(b)) for a in group for b in group if a < b}
    assert close and close <= together
    one = run_dedup(texts, DedupConfig(bucket_reading="signature", rounds=1))[0]
    three = run_dedup(texts, DedupConfig(bucket_reading="signature", rounds=3))[0]
    full = run_dedup(texts, DedupConfig())[0]
    assert one <= three <= full and len(one) <= len(three)
