"""`xmodel generate`: stream a continuation of a prompt from a model directory."""

from __future__ import annotations

import torch

from ..errors import XmodelError
from .common import require_model_dir


def register(sub) -> None:
    p = sub.add_parser("generate", help="stream a continuation of a prompt",
                       description="Load a model directory (with its tokenizer) and stream generated tokens. "
                                   "Temperature 0 is greedy decoding.")
    p.add_argument("model", help="model directory (save_pretrained layout, with a tokenizer)")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="tokenizer directory, if not the model directory")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from transformers import AutoModelForCausalLM, TextStreamer

    from ..tokenizer.loading import check_vocab_fits, load_pretrained_tokenizer

    path = require_model_dir(args.model)
    tokenizer = load_pretrained_tokenizer(args.tokenizer or path)
    if args.max_new_tokens < 1:
        raise XmodelError("--max-new-tokens: must be ≥ 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise XmodelError("--temperature must be ≥ 0 and --top-p in (0, 1]")
    model = AutoModelForCausalLM.from_pretrained(path).to(args.device).eval()
    check_vocab_fits(len(tokenizer), model.config.vocab_size)
    torch.manual_seed(args.seed)
    inputs = tokenizer(args.prompt, return_tensors="pt").to(args.device)
    sampling = args.temperature > 0
    kwargs = dict(do_sample=sampling, max_new_tokens=args.max_new_tokens,
                  repetition_penalty=args.repetition_penalty, pad_token_id=model.config.pad_token_id,
                  streamer=TextStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True))
    if sampling:
        kwargs.update(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k or None)
    with torch.inference_mode():
        model.generate(**inputs, **kwargs)
    return 0
