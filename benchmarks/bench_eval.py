"""Evaluation throughput (questions/s) on ARC-Easy: our integration vs lm-eval's stock `hf` model type.

Ours: `xmodel.eval.harness.build_lm` (lm-eval's HFLM around an in-memory XmodelForCausalLM). Baseline: lm-eval's
stock ``hf`` model (registry name "hf", loading a checkpoint directory with AutoModelForCausalLM) on the same
weights exported to a plain LlamaForCausalLM. Both run the same local task (xmodel_arc_easy) on the same
questions, alternating, and must give the same accuracy; the ratio ours/stock is printed. Goal: ≥ 1.0.

The Llama copy is written here: the μP multipliers are folded into the weights (embedding × scale_emb,
o_proj and down_proj × scale_depth/√L, LM head ÷ width_mult, untied), which reproduces the μP model's logits
exactly (checked before timing). The project's exporter (another issue) does the same job for users.

    python benchmarks/bench_eval.py [--preset tiny] [--limit 100] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from xmodel import XmodelForCausalLM  # noqa: E402
from xmodel.config import load_config  # noqa: E402
from xmodel.data.root import data_root as resolve_data_root  # noqa: E402
from xmodel.model.precision import cpu_description  # noqa: E402


def train_tokenizer(data_root: Path, vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the data kit's English prose (the project's own tokenizer is another issue)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    with gzip.open(data_root / "corpora/en/english_public_domain.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(1000), fh)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       special_tokens=["<pad>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@torch.no_grad()
def to_plain_llama(model: XmodelForCausalLM) -> LlamaForCausalLM:
    """The same function as a stock LlamaForCausalLM: μP multipliers folded into the weights."""
    cfg = model.config
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False,
        max_position_embeddings=cfg.max_position_embeddings, bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"] * cfg.scale_emb
    state["lm_head.weight"] = model.lm_head.weight / cfg.width_mult
    for key in state:
        if key.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            state[key] = state[key] * cfg.residual_scale
    llama.load_state_dict(state, strict=True)
    return llama.eval()


def timed_eval(lm, manager, limit: int) -> tuple[float, float]:
    from lm_eval import simple_evaluate

    start = time.perf_counter()
    res = simple_evaluate(model=lm, tasks=["xmodel_arc_easy"], task_manager=manager, limit=limit,
                          bootstrap_iters=0, log_samples=False)
    return time.perf_counter() - start, res["results"]["xmodel_arc_easy"]["acc,none"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--limit", type=int, default=100, help="ARC-Easy questions per timed run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokenizer-vocab", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from xmodel.eval.harness import build_lm
    from xmodel.eval.suites import TASKS_DIR

    data_root = resolve_data_root()
    tokenizer = train_tokenizer(data_root, args.tokenizer_vocab)
    torch.manual_seed(0)
    cfg = load_config(args.preset).model
    ours = XmodelForCausalLM(cfg).eval()
    llama = to_plain_llama(ours)
    ids = torch.tensor([tokenizer("Which statement best explains why photosynthesis matters?")["input_ids"]])
    with torch.no_grad():
        diff = (ours(input_ids=ids).logits - llama(input_ids=ids).logits).abs().max().item()
    print(f"preset {args.preset} ({sum(p.numel() for p in ours.parameters()) / 1e6:.1f}M parameters), "
          f"ARC-Easy × {args.limit} questions, batch {args.batch_size}, {args.threads} threads, "
          f"torch {torch.__version__}, fp32 on {cpu_description()}; max |logit difference| xmodel vs llama "
          f"export: {diff:.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        llama.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del llama
        stock = get_model("hf").create_from_arg_obj({"pretrained": tmp, "dtype": "float32"},
                                                    {"batch_size": args.batch_size, "device": "cpu"})
        mine = build_lm(ours, tokenizer, batch_size=args.batch_size)
        manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                              metadata={"data_root": str(data_root)})
        timed_eval(mine, manager, 8)  # warm-up both (task loading, allocator)
        timed_eval(stock, manager, 8)
        times: dict[str, list[float]] = {"xmodel": [], "stock hf": []}
        accs: dict[str, set[float]] = {"xmodel": set(), "stock hf": set()}
        for i in range(args.repeats):
            order = (("xmodel", mine), ("stock hf", stock)) if i % 2 == 0 else (("stock hf", stock), ("xmodel", mine))
            for name, lm in order:
                seconds, acc = timed_eval(lm, manager, args.limit)
                times[name].append(seconds)
                accs[name].add(round(acc, 6))
    qps = {name: args.limit / statistics.median(t) for name, t in times.items()}
    for name in qps:
        print(f"{name:>9}: {qps[name]:6.2f} questions/s  (median of {args.repeats}; accuracy {sorted(accs[name])})")
    same = accs["xmodel"] == accs["stock hf"]
    print(f"ratio xmodel / stock hf: {qps['xmodel'] / qps['stock hf']:.2f}x   same accuracy: {same}")


if __name__ == "__main__":
    main()
