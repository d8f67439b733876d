"""`xmodel serve`: an OpenAI-compatible HTTP API (completions, chat completions, SSE streaming) on uvicorn."""

from __future__ import annotations

from pathlib import Path

from ..errors import XmodelError
from .chat import add_model_args, default_device


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API",
        description="POST /v1/completions and /v1/chat/completions (stream: true for server-sent events), "
                    "GET /v1/models and /health. Works with the official openai client: "
                    "OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='unused'). Binds 127.0.0.1 unless "
                    "--host says otherwise; waiting requests are decoded together in batches.")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", help="the model id clients send (default: the directory's name)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ requests")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    limits.add_argument("--max-prompt-tokens", type=int, help="longer prompts get 400 (default: the context - 1)")
    limits.add_argument("--max-concurrent-requests", type=int, default=16,
                        help="requests running or waiting; more get 429")
    limits.add_argument("--max-batch-size", type=int, default=8, help="sequences decoded together")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import uvicorn

        from ..inference.server import ServerLimits, create_app
    except ImportError as e:
        raise XmodelError(f"xmodel serve needs FastAPI and uvicorn ({e.name} is missing): "
                          "pip install 'xmodel[serve]'") from None
    from ..inference.runtime import load_generator

    for name in ("max_body_bytes", "max_concurrent_requests", "max_batch_size", "port"):
        if getattr(args, name) < 1:
            raise XmodelError(f"--{name.replace('_', '-')}: must be ≥ 1")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise XmodelError("--max-prompt-tokens: must be ≥ 1")
    generator = load_generator(args.model, args.tokenizer, args.dtype, default_device(args.device),
                               args.max_batch_size, quantize=args.quantize, compile=args.compile)
    name = args.served_model_name or Path(args.model).resolve().name
    app = create_app(generator, name, ServerLimits(
        max_body_bytes=args.max_body_bytes, max_prompt_tokens=args.max_prompt_tokens,
        max_concurrent_requests=args.max_concurrent_requests, max_batch_size=args.max_batch_size,
        api_key=args.api_key))
    print(f"serving {name} on http://{args.host}:{args.port}/v1 (OpenAI-compatible; Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
