"""`xmodel import`: MiniCPM / Xmodel-2 (trust_remote_code layout) or Llama checkpoints, or llama-architecture
GGUF files → Xmodel checkpoint."""

from __future__ import annotations

from ..errors import XmodelError


def register(sub) -> None:
    p = sub.add_parser(
        "import", help="convert a MiniCPM/Xmodel-2 or Llama checkpoint into an Xmodel checkpoint",
        description="Reads a Hugging Face checkpoint directory (config.json + safetensors or pytorch_model.bin, "
                    "sharded or not) of the MiniCPM / Xmodel-2 layout (scale_emb, scale_depth, dim_model_base) "
                    "or of Llama, or a llama-architecture .gguf file (any type the gguf package dequantises: "
                    "f32, f16, bf16, q8_0, q4_0, q4_1, k-quants; read by transformers' GGUF loader), and writes "
                    "an Xmodel checkpoint with the same logits and the source's tokenizer, ready to evaluate, "
                    "continue pretraining (its xmodel.yaml: `xmodel train --config OUT/xmodel.yaml --data DIR "
                    "--tokenizer DIR`) or run a new decay stage.")
    p.add_argument("source", help="checkpoint directory or .gguf file to import")
    p.add_argument("output", help="Xmodel checkpoint directory to create")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="default: the source's (a GGUF file: float32, dequantised)")
    mup = p.add_argument_group("μP form of a Llama source",
                               "Express a Llama checkpoint with these μP multipliers (same logits; the weights are "
                               "unfolded), e.g. to continue training it with μP learning rates. Default: the "
                               "values recorded by 'xmodel export --to llama', else none.")
    mup.add_argument("--scale-emb", type=float)
    mup.add_argument("--scale-depth", type=float)
    mup.add_argument("--dim-model-base", type=int)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export.importing import import_checkpoint

    given = {"scale_emb": args.scale_emb, "scale_depth": args.scale_depth, "dim_model_base": args.dim_model_base}
    mup = None
    if any(v is not None for v in given.values()):
        mup = {"scale_emb": 1.0, "scale_depth": None, "dim_model_base": None}
        mup.update({k: v for k, v in given.items() if v is not None})
    if str(args.source).endswith(".gguf"):
        from ..export.gguf_import import import_gguf

        if mup is not None:
            raise XmodelError("--scale-emb/--scale-depth/--dim-model-base apply to Llama checkpoint folders")
        out, layout, cfg = import_gguf(args.source, args.output, args.dtype)
    else:
        out, layout, cfg = import_checkpoint(args.source, args.output, mup, args.dtype)
    mup_text = ("neutral μP (plain Llama)" if cfg.is_neutral_mup else
                f"scale_emb {cfg.scale_emb}, scale_depth {cfg.scale_depth}, dim_model_base {cfg.dim_model_base}")
    print(f"wrote {out} (from the {layout} layout; {mup_text})")
    return 0
