"""`xmodel export`: a trained Xmodel as a plain Llama checkpoint or a GGUF file for llama.cpp."""

from __future__ import annotations

from pathlib import Path

from ..errors import XmodelError
from .common import require_model_dir

GGUF_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export to a plain Llama checkpoint or to GGUF (llama.cpp)",
        description="--to llama: a standard LlamaForCausalLM directory (no custom code) whose logits equal the "
                    "Xmodel's; the μP multipliers are folded into the weights and rms_norm_eps. --to gguf: the "
                    "same folded model as one GGUF file with its tokenizer, for llama.cpp / Ollama / LM Studio.")
    p.add_argument("model", help="an Xmodel checkpoint directory")
    p.add_argument("--to", required=True, choices=["llama", "gguf"], help="output format")
    p.add_argument("output", help="output directory (llama) or file (gguf, e.g. model.gguf)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="llama: weight precision (default: the checkpoint's)")
    p.add_argument("--type", dest="gguf_type", choices=GGUF_TYPES, default="f16",
                   help="gguf: tensor type of the 2-D weights (norms stay f32; default f16)")
    p.add_argument("--tokenizer", help="tokenizer directory, if not the model directory")
    p.add_argument("--name", help="gguf: general.name (default: the model directory's name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (a non-empty directory or a file); refused otherwise")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    src = require_model_dir(args.model)
    tokenizer_dir = Path(args.tokenizer) if args.tokenizer else src
    if args.to == "llama":
        from ..export.llama import export_llama

        out = export_llama(src, args.output, getattr(torch, args.dtype) if args.dtype else None, tokenizer_dir,
                           overwrite=args.overwrite)
        print(f"wrote {out} (LlamaForCausalLM; load with AutoModelForCausalLM.from_pretrained)")
        return 0
    from ..export.gguf_file import export_gguf

    if args.dtype:
        raise XmodelError("--dtype applies to --to llama; use --type for gguf")
    out, info = export_gguf(src, args.output, args.gguf_type, tokenizer_dir, name=args.name,
                            overwrite=args.overwrite)
    print(f"wrote {out} ({info})")
    return 0
