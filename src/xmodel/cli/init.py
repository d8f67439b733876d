"""`xmodel init`: write a freshly initialised model (μP init) as a Hugging Face checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import PRESETS, dump_config
from ..errors import XmodelError
from .common import add_config_args, config_from_args, human


def register(sub) -> None:
    p = sub.add_parser("init", help="write a randomly initialised model directory",
                       description="Build a model from a preset (plus --config / --model.* overrides), "
                                   "initialise it with the μP rules, and save it with save_pretrained.")
    p.add_argument("preset", choices=list(PRESETS), metavar="PRESET", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("output", help="directory to create (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="a tokenizer directory to save beside the model")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..model import XmodelForCausalLM
    from ..model.loading import save_model

    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise XmodelError(f"{out}: exists and is not empty")
    cfg = config_from_args(args, args.preset)
    tokenizer = None
    if args.tokenizer:
        from ..tokenizer.loading import load_pretrained_tokenizer

        if not Path(args.tokenizer).is_dir():
            raise XmodelError(f"--tokenizer {args.tokenizer}: no such directory")
        tokenizer = load_pretrained_tokenizer(args.tokenizer)
        if len(tokenizer) > cfg.model.vocab_size:
            raise XmodelError(f"--tokenizer: {len(tokenizer)} tokens do not fit model.vocab_size="
                              f"{cfg.model.vocab_size}")
    torch.manual_seed(args.seed)
    model = XmodelForCausalLM(cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    dump_config(cfg, out / "xmodel.yaml")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({human(n)} parameters, preset {args.preset})")
    return 0
