"""Agent throughput: ReAct episodes per minute with the `tiny` model on CPU, and where the time goes.

Runs HotpotQA episodes (offline Wikipedia) through the real loop with a freshly initialised `tiny` model (or
--model DIR) and reports episodes/minute, the share of wall time spent generating and the share spent in
retrieval. The baseline, measured in the same run on the same episodes, recomputes the few-shot prefix for
every completion (`prefix_cache=False`); the ratio printed is the speed-up of the shared-prefix cache.

An untrained model never writes a stop string, so every completion runs to --max-new-tokens: this is the
worst case per completion (a trained model stops at the end of its action line).

    python benchmarks/bench_agents.py --episodes 4 --batch-size 4 --max-new-tokens 48 --baseline-steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import xmodel  # noqa: E402,F401
from xmodel.data.root import data_root as resolve_data_root  # noqa: E402
from xmodel.eval.agents import qa  # noqa: E402
from xmodel.eval.agents.loop import run_episodes  # noqa: E402
from xmodel.eval.agents.policy import GenerationSettings, LMPolicy  # noqa: E402
from xmodel.eval.agents.suite import offline_wiki  # noqa: E402


def build_tiny(data_root: Path, out: Path, vocab: int):
    """A BPE tokenizer trained on the ReAct prompts and passages, and `xmodel init tiny` with its vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from xmodel.cli.main import main

    react = data_root / "eval" / "react"
    texts = [v for name in ("prompts_naive.json", "fever.json")
             for v in json.loads((react / "prompts" / name).read_text()).values()]
    with (react / "wiki_passages.jsonl").open() as fh:
        texts += [" ".join(json.loads(line)["sentences"]) for _, line in zip(range(3000), fh)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(out / "tok")
    assert main(["init", "tiny", str(out / "tiny"), "--tokenizer", str(out / "tok"), "--model.vocab_size",
                 str(vocab), "--model.pad_token_id", "0", "--model.bos_token_id", "1",
                 "--model.eos_token_id", "2"]) == 0
    return out / "tiny"


def measure(model, tokenizer, items, wiki, prefix, batch_size, max_new_tokens, max_steps, cache) -> dict:
    episodes = qa.make_episodes(items, prefix, wiki, max_steps=max_steps, repeat_limit=0)
    policy = LMPolicy(model, tokenizer, GenerationSettings(max_new_tokens=max_new_tokens, prefix_cache=cache))
    records, stats = run_episodes(episodes, policy, batch_size, progress=False)
    row = stats.to_dict()
    retrieval = sum(r["retrieval_seconds"] for r in records)
    row.update(retrieval_s=round(retrieval, 4), retrieval_share=round(retrieval / stats.wall_s, 5),
               s_per_completion=round(stats.generation_s / stats.completions, 3), steps=sum(r["n_steps"]
                                                                                          for r in records))
    return row


def search_latency(wiki, items) -> dict:
    """Seconds per search[…] on the offline store: exact titles (a page) and whole questions (a BM25 miss)."""
    from xmodel.eval.agents.wiki import WikiEnv

    env = WikiEnv(wiki)
    titles = [t for it in items for t in it.gold_titles]
    questions = [it.question for it in items]
    out = {}
    for name, queries in (("title", titles), ("question", questions)):
        before = env.tool_seconds
        for q in queries:
            env.step(f"search[{q}]")
        out[name] = (env.tool_seconds - before) / len(queries)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model directory (default: a fresh tiny model with a 4096-token BPE)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=7, help="ReAct's HotpotQA limit (7)")
    p.add_argument("--baseline-steps", type=int, default=2,
                   help="steps per episode for the cache-on/off comparison (the uncached arm is slow)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data_root = resolve_data_root(args.data_root)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else build_tiny(data_root, Path(tmp), 4096)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    wiki = offline_wiki(str(data_root))
    items = qa.load_hotpotqa(data_root, wiki, "covered", args.episodes)
    prefix = qa.load_prompt(data_root, "hotpotqa")
    print(f"model {model_dir.name} ({n_params / 1e6:.1f}M params), {args.threads} threads, "
          f"prefix {len(tokenizer(prefix)['input_ids'])} tokens, load average {os.getloadavg()[0]:.1f}")
    common = (model, tokenizer, items, wiki, prefix, args.batch_size, args.max_new_tokens)
    t = time.perf_counter()
    full = measure(*common, args.max_steps, True)
    print(f"HotpotQA, {args.episodes} episodes × ≤{args.max_steps} steps, batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens: {full['episodes_per_minute']:.2f} episodes/min "
          f"({full['wall_s']:.1f} s, {full['completions']} completions); generation "
          f"{100 * full['generation_share']:.1f}%, retrieval {100 * full['retrieval_share']:.3f}%, "
          f"other env/loop {100 * (1 - full['generation_share'] - full['retrieval_share']):.1f}%")
    lat = search_latency(wiki, qa.load_hotpotqa(data_root, wiki, "covered", 200))
    per_step = full["wall_s"] / max(full["steps"], 1)
    print(f"offline search: {1e3 * lat['title']:.2f} ms per exact-title search, {1e3 * lat['question']:.2f} ms per "
          f"BM25 miss; vs {per_step:.1f} s of wall time per agent step here, a search on every step would be "
          f"{100 * lat['question'] / per_step:.3f}% of the time")
    cached = measure(*common, args.baseline_steps, True)
    plain = measure(*common, args.baseline_steps, False)
    print(f"prefix cache, {args.baseline_steps} steps/episode: {cached['s_per_completion']:.2f} s/completion; "
          f"baseline (no cache) {plain['s_per_completion']:.2f} s/completion; "
          f"ratio {plain['s_per_completion'] / cached['s_per_completion']:.2f}x")
    print(json.dumps({"full": full, "cached": cached, "baseline": plain, "search_latency_s": lat,
                      "total_s": round(time.perf_counter() - t, 1)}))


if __name__ == "__main__":
    main()
