"""Forward+backward tokens/s of an Xmodel preset against transformers' LlamaForCausalLM of the same shape.

Both models get the same weights, batch and sequence; timings alternate between them (median of several
steps after warm-up) in the precision the trainer's rule picks on this CPU (`--precision auto`: bf16 autocast
only where a bf16 product of the model's MLP shape measures ≥ 1.2× fp32; `both`: fp32 and bf16), and the ratio
ours/HF is printed. Goal: ≥ 1.0×. The first lines name the CPU and the rates behind the precision.

    python benchmarks/bench_model.py [--preset tiny] [--batch 2] [--seq 256] [--steps 5] [--precision both]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from xmodel import XmodelForCausalLM
from xmodel.config import load_config
from xmodel.model.precision import benchmark_precisions, cpu_description, probe_shape


def llama_like(cfg) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_word_embeddings, max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, attn_implementation="sdpa"))


def step_time(model, ids, autocast: bool) -> float:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "both"],
                    help="auto: the trainer's rule for this CPU; both: fp32 and bf16 autocast")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.preset).model
    ours = XmodelForCausalLM(cfg).train()
    hf = llama_like(cfg).train()
    hf.load_state_dict(ours.state_dict(), strict=False)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    tokens = args.batch * args.seq
    precisions, choice = benchmark_precisions(args.precision, "cpu", probe_shape(cfg.hidden_size,
                                                                                 cfg.intermediate_size, tokens))
    print(f"preset {args.preset}: batch {args.batch} × seq {args.seq}, {args.threads} threads, "
          f"torch {torch.__version__}, {cpu_description()}\n{choice}")
    for autocast in [p == "bf16" for p in precisions]:
        times = {"xmodel": [], "hf": []}
        for i in range(args.steps + 1):
            for name, model in (("xmodel", ours), ("hf", hf)) if i % 2 else (("hf", hf), ("xmodel", ours)):
                t = step_time(model, ids, autocast)
                if i:  # first round is warm-up
                    times[name].append(t)
        tps = {k: tokens / statistics.median(v) for k, v in times.items()}
        label = "bf16 autocast" if autocast else "fp32"
        print(f"{label:>14}: xmodel {tps['xmodel']:8.0f} tok/s   hf llama {tps['hf']:8.0f} tok/s   "
              f"ratio {tps['xmodel'] / tps['hf']:.2f}x")


if __name__ == "__main__":
    main()
