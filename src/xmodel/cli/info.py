"""`xmodel info`: parameters, FLOPs per token, training memory and KV-cache size of a preset or checkpoint."""

from __future__ import annotations

import json

from ..config import PRESETS, load_config
from ..model.configuration_xmodel import XmodelConfig
from ..model.loading import read_model_config
from ..model.stats import model_stats, training_memory_bytes
from .common import add_config_args, config_from_args, human, is_preset, positive_int, require_model_dir


def register(sub) -> None:
    p = sub.add_parser("info", help="sizes, FLOPs and memory of a preset or a checkpoint",
                       description="Print parameter counts (total and without embeddings), FLOPs per token, a "
                                   "training-memory estimate and KV-cache bytes per token. With no argument: "
                                   "every preset.")
    p.add_argument("target", nargs="?", help=f"a preset ({', '.join(PRESETS)}) or a model directory")
    p.add_argument("--seq-len", type=positive_int, default=None, help="context length for FLOPs and memory "
                                                              "(default: the model's max_position_embeddings)")
    p.add_argument("--micro-batch", type=positive_int, default=1, help="sequences per micro-batch for the memory estimate")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="activation / KV-cache precision")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_args(p)
    p.set_defaults(func=run)


def describe(name: str, cfg: XmodelConfig, seq_len: int | None, micro_batch: int, dtype: str) -> dict:
    seq_len = seq_len or cfg.max_position_embeddings
    stats = model_stats(cfg, seq_len, kv_dtype=dtype)
    mem = training_memory_bytes(cfg, micro_batch, seq_len, dtype)
    return {
        "name": name,
        "shape": f"d{cfg.hidden_size} L{cfg.num_hidden_layers} h{cfg.num_attention_heads}/kv{cfg.num_key_value_heads}"
                 f" ffn{cfg.intermediate_size} V{cfg.vocab_size}" + (" tied" if cfg.tie_word_embeddings else ""),
        "params_total": stats.params_total,
        "params_non_embedding": stats.params_non_embedding,
        "seq_len": seq_len,
        "flops_per_token_train": stats.flops_per_token_train,
        "train_memory_bytes": mem["total"],
        "kv_cache_bytes_per_token": stats.kv_cache_bytes_per_token,
        "mup": {"scale_emb": cfg.scale_emb, "scale_depth": cfg.scale_depth, "dim_model_base": cfg.dim_model_base,
                "init_std": cfg.initializer_range},
    }


def run(args) -> int:
    if args.target is None and args.config:  # the config's own model (a recipe names its preset)
        cfg = config_from_args(args, None)
        rows = [describe(f"{args.config} ({cfg.preset or 'no preset'})", cfg.model,
                         args.seq_len or cfg.data.seq_len, args.micro_batch, args.dtype)]
        print_training_plan(cfg)
    elif args.target is None:
        rows = [describe(n, load_config(n, args.config, args.overrides).model, args.seq_len, args.micro_batch,
                         args.dtype) for n in PRESETS]
    elif is_preset(args.target):
        rows = [describe(args.target, config_from_args(args, args.target).model, args.seq_len, args.micro_batch,
                         args.dtype)]
    else:
        path = require_model_dir(args.target)
        read_model_config(path)  # a config.json that does not describe a shape is refused, not defaulted
        cfg = XmodelConfig.from_pretrained(path)
        rows = [describe(str(path), cfg, args.seq_len, args.micro_batch, args.dtype)]
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return 0
    header = ["model", "shape", "params", "non-emb", "seq", "train FLOP/tok", f"train mem (mb={args.micro_batch})",
              "KV/token"]
    table = [[r["name"], r["shape"], human(r["params_total"]), human(r["params_non_embedding"]), str(r["seq_len"]),
              human(r["flops_per_token_train"]), human(r["train_memory_bytes"], "B"),
              human(r["kv_cache_bytes_per_token"], "B")] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    for line in [header, ["-" * w for w in widths], *table]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())
    print("\nparams counts a tied LM head once; non-emb excludes the embedding (and an untied head). "
          "Memory: fp32 weights+grads+AdamW, activations, fp32 logits; no sharding.")
    return 0


def print_training_plan(cfg) -> None:
    """The config's training in numbers: global batch (and its step-up or ramp), steps, tokens, schedule."""
    t = cfg.train
    seq = cfg.data.seq_len
    end = t.batch_tokens // seq
    if t.batch_tokens_start and t.batch_ramp_steps:
        start = t.batch_tokens_start // seq
        ramp = (f"{start:,} sequences ({human(t.batch_tokens_start)} tokens) for {t.batch_ramp_steps:,} steps, then "
                if t.batch_ramp == "step" else f"{start:,} → (linear over {t.batch_ramp_steps:,} steps) ")
        first = min(t.batch_ramp_steps, t.max_steps)
        tokens = first * (t.batch_tokens_start if t.batch_ramp == "step" else (t.batch_tokens_start + t.batch_tokens) / 2)
        tokens += (t.max_steps - first) * t.batch_tokens
    else:
        ramp, tokens = "", t.max_steps * t.batch_tokens
    s = t.schedule
    shape = (f"WSD, half-life {s.half_life:g} steps" if s.kind == "wsd" else
             f"{s.kind} to {s.min_lr:g} at step {s.total_steps:,}" if s.kind in ("cosine", "linear") else s.kind)
    print(f"training: global batch {ramp}{end:,} sequences × {seq:,} = {human(t.batch_tokens)} tokens; "
          f"{t.max_steps:,} steps, {human(tokens)} tokens; max lr {s.max_lr:g} after {s.warmup_steps:,} warmup "
          f"steps, {shape}; {t.optimizer}, μP LR policy {t.mup_lr_policy}")
