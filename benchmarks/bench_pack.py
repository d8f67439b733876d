"""Tokenise + pack throughput of `xmodel data prepare` against `tokenizers`' own `encode_batch`, same text, same run.

The text: real documents of the data root (English, Chinese and code corpora), written once to a jsonl file.
- baseline: `Tokenizer.encode_batch(texts)` in one process on texts already in memory (the library's own
  Rust thread pool uses every core).
- for reference, not in the ratio: the same `encode_batch` with the Unigram cache enlarged as the pack stage
  enlarges it (`TOKENIZER_CACHE_ENTRIES`), which shows how much of the lead is that setting.
- ours: `prepare_data` with dedup off and 2 worker processes running 4 tasks (datatrove's local executor):
  read + parse the jsonl, tokenise, append EOS, pack into seq_len rows, write the shards and the manifest.
  It runs in a separate clean process, as `xmodel data prepare` does (timed inside it, imports excluded):
  run from this process, whose heap holds the baseline's texts and freed encodings, its forked workers ran
  0-25 % slower in our runs (`--same-process` shows it).
Runs alternate (baseline, ours, baseline, ...). Each round's ratio compares two runs seconds apart, so the
median of the per-round ratios is the figure to read (this VM's speed drifts by tens of percent over minutes);
the MB/s medians of each side are printed too. Goal: >= 1.0x.

    python benchmarks/bench_pack.py [--tokenizer DIR] [--rounds 3] [--code-docs 1500]
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def load_texts(root: Path, code_docs: int) -> list[str]:
    texts = []
    for rel, limit in (("corpora/en/english_public_domain.jsonl.gz", None),
                       ("corpora/zh/chinese_prose_clue_lcsts.jsonl.gz", None),
                       ("corpora/code/code_corpus.jsonl.gz", code_docs)):
        with gzip.open(root / rel, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if limit is not None and i >= limit:
                    break
                texts.append(json.loads(line)["text"])
    return texts


def _prepare_server(conn, cfg: dict, tok_dir: str, root: str) -> None:
    """A clean process that runs prepare_data on request and answers (seconds, tokens packed)."""
    from xmodel.data.config import DataConfig
    from xmodel.config.core import build_section
    from xmodel.data.prepare import prepare_data

    data_cfg = build_section(DataConfig, cfg, "data")
    conn.send("ready")  # imports done: the timed rounds do not overlap them
    while (out := conn.recv()) is not None:
        t0 = time.perf_counter()
        m = prepare_data(data_cfg, tok_dir, out, root, progress=False, log=lambda *_: None)
        conn.send((time.perf_counter() - t0, m.sources["text"]["train"]["tokens_in"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", help="tokenizer directory (default: train a 12k quickstart tokenizer first)")
    ap.add_argument("--data-root")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--code-docs", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=0, help="datatrove tasks (default 2 per worker)")
    ap.add_argument("--same-process", action="store_true",
                    help="run prepare_data in this benchmark's own process instead of a clean one")
    args = ap.parse_args()

    from xmodel.config.core import build_section
    from xmodel.data.config import DataConfig
    from xmodel.data.pipeline import TOKENIZER_CACHE_ENTRIES
    from xmodel.data.prepare import prepare_data
    from xmodel.data.root import data_root
    from xmodel.tokenizer import load_tokenizer

    root = data_root(args.data_root)
    work = Path(tempfile.mkdtemp(prefix="bench_pack_"))
    conn = server = None
    try:
        tok_dir = args.tokenizer
        if tok_dir is None:
            from xmodel.config import load_config
            from xmodel.data.config import resolve_config_path
            from xmodel.tokenizer import train_tokenizer

            qs = load_config(yaml_path=resolve_config_path("quickstart")).data
            tok_dir = train_tokenizer(qs, work / "tokenizer", root, log=lambda *_: None)
        texts = load_texts(root, args.code_docs)
        corpus = work / "corpus.jsonl"
        with open(corpus, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        cfg_dict = {"seq_len": 2048, "tasks": args.tasks or 2 * args.workers, "workers": args.workers,
                    "sources": [{"name": "text", "paths": [str(corpus)]}],
                    "dedup": {"exact": False, "near": False}, "heldout": {"fraction": 0.0}}
        cfg = build_section(DataConfig, cfg_dict, "data")
        if not args.same_process:
            ctx = multiprocessing.get_context("spawn")
            conn, child_conn = ctx.Pipe()
            server = ctx.Process(target=_prepare_server, args=(child_conn, cfg_dict, str(tok_dir), str(root)))
            server.start()
            child_conn.close()  # so that recv() raises EOFError if the server dies instead of waiting forever
            conn.recv()
        tok = load_tokenizer(tok_dir)
        print(f"{len(texts):,} documents, {mb:.1f} MB of UTF-8 text; tokenizer {tok.get_vocab_size():,} entries; "
              f"{os.cpu_count()} CPUs, {args.workers} worker processes")
        base, ours, cached = [], [], []
        for r in range(args.rounds):
            tok = load_tokenizer(tok_dir)  # a fresh tokenizer each round: its cache starts empty, as in a task
            t0 = time.perf_counter()
            encs = tok.encode_batch(texts)
            base.append(time.perf_counter() - t0)
            tokens = sum(len(e) for e in encs)
            del encs
            out = work / f"out{r}"
            if conn is None:
                t0 = time.perf_counter()
                m = prepare_data(cfg, tok_dir, out, root, progress=False, log=lambda *_: None)
                ours.append(time.perf_counter() - t0)
                packed = m.sources["text"]["train"]["tokens_in"]
            else:
                conn.send(str(out))
                seconds, packed = conn.recv()
                ours.append(seconds)
            assert packed == tokens + len(texts), (packed, tokens)  # every token + one EOS per document
            shutil.rmtree(out)
            big = load_tokenizer(tok_dir)
            getattr(big.model, "_resize_cache", lambda n: None)(TOKENIZER_CACHE_ENTRIES)
            t0 = time.perf_counter()
            big.encode_batch(texts)
            cached.append(time.perf_counter() - t0)
            del big
            print(f"round {r}: encode_batch {mb / base[-1]:6.2f} MB/s   prepare (tokenise+pack+write) "
                  f"{mb / ours[-1]:6.2f} MB/s   ratio {base[-1] / ours[-1]:.2f}x   (encode_batch with the larger "
                  f"cache {mb / cached[-1]:.2f} MB/s)")
        b, o = mb / statistics.median(base), mb / statistics.median(ours)
        ratio = statistics.median(tb / to for tb, to in zip(base, ours))
        print(f"median: encode_batch {b:.2f} MB/s, prepare {o:.2f} MB/s; ratio {ratio:.2f}x (median of the rounds' "
              f"ratios; {min(tb / to for tb, to in zip(base, ours)):.2f}-{max(tb / to for tb, to in zip(base, ours)):.2f}x)"
              f" ({tokens:,} tokens per pass)")
        print(f"reference: encode_batch with a {TOKENIZER_CACHE_ENTRIES:,}-entry cache "
              f"{mb / statistics.median(cached):.2f} MB/s; prepare / that: "
              f"{statistics.median(tc / to for tc, to in zip(cached, ours)):.2f}x")
        if conn is not None:
            conn.send(None)
            server.join()
    finally:
        if server is not None and server.is_alive():
            server.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
