"""`xmodel generate`: stream a continuation of a prompt from a model directory."""

from __future__ import annotations

import sys

import torch

from ..errors import XmodelError
from .common import require_model_dir


def register(sub) -> None:
    p = sub.add_parser("generate", help="stream a continuation of a prompt",
                       description="Load a model directory (with its tokenizer) and stream generated tokens. "
                                   "Temperature 0 is greedy decoding.")
    p.add_argument("model", help="model directory (save_pretrained layout, with a tokenizer)")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="at most this many tokens (capped to what the model's context leaves after the prompt)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="tokenizer directory, if not the model directory")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.set_defaults(func=run)


def new_token_budget(max_new_tokens: int, prompt_tokens: int, context: int) -> int:
    """--max-new-tokens within what the model's context leaves after the prompt; a note says when it is cut."""
    if prompt_tokens == 0:
        raise XmodelError("--prompt: empty (no tokens to continue)")
    room = context - prompt_tokens
    if room < 1:
        raise XmodelError(f"--prompt: its {prompt_tokens} tokens fill the model's context of {context}")
    if max_new_tokens > room:
        print(f"note: --max-new-tokens {max_new_tokens} capped to {room} (the model's context is {context} tokens, "
              f"the prompt takes {prompt_tokens})", file=sys.stderr)
        return room
    return max_new_tokens


def refuse_non_finite_logits(model_dir, prompt_tokens: int):
    """A logits processor that stops at the first NaN or +inf logit. Greedy decoding of NaN logits picks token 0
    at every step, so a model with broken weights would otherwise print the prompt and nothing else."""
    from transformers import LogitsProcessor

    class RefuseNonFinite(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if torch.isnan(scores).any() or torch.isposinf(scores).any():  # -inf is a masked token, not a fault
                done = input_ids.shape[1] - prompt_tokens
                raise XmodelError(f"{model_dir}: the model's logits are not finite (NaN or inf) after {done} "
                                  "generated tokens: its weights are broken")
            return scores

    return RefuseNonFinite()


def run(args) -> int:
    from transformers import LogitsProcessorList, TextStreamer

    from ..model.loading import load_model_and_tokenizer, resolve_device

    if args.max_new_tokens < 1:
        raise XmodelError("--max-new-tokens: must be ≥ 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise XmodelError("--temperature must be ≥ 0 and --top-p in (0, 1]")
    path = require_model_dir(args.model)
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(path, args.tokenizer, device)
    torch.manual_seed(args.seed)
    inputs = tokenizer(args.prompt, return_tensors="pt").to(device)
    prompt_tokens = inputs["input_ids"].shape[1]
    max_new_tokens = new_token_budget(args.max_new_tokens, prompt_tokens, model.config.max_position_embeddings)
    sampling = args.temperature > 0
    kwargs = dict(do_sample=sampling, max_new_tokens=max_new_tokens,
                  repetition_penalty=args.repetition_penalty, pad_token_id=model.config.pad_token_id,
                  logits_processor=LogitsProcessorList([refuse_non_finite_logits(path, prompt_tokens)]),
                  streamer=TextStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True))
    if sampling:
        kwargs.update(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k or None)
    with torch.inference_mode():
        model.generate(**inputs, **kwargs)
    return 0
