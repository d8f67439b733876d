"""`xmodel serve`: an OpenAI-compatible HTTP API (completions, chat completions, SSE streaming) on uvicorn."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from ..errors import XmodelError
from .chat import add_model_args

API_KEY_ENV = "XMODEL_API_KEY"  # the key without putting it on the command line (visible in `ps`)


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API",
        description="POST /v1/completions and /v1/chat/completions (stream: true for server-sent events), "
                    "GET /v1/models and /health. Works with the official openai client: "
                    "OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='unused'). Binds 127.0.0.1 unless "
                    "--host says otherwise; waiting requests are decoded together in batches.")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port, printed)")
    p.add_argument("--served-model-name", help="the model id clients send (default: the directory's name)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ requests (other users see it in "
                                     f"the process list: prefer ${API_KEY_ENV} or --api-key-file)")
    p.add_argument("--api-key-file", metavar="FILE", help="read the API key from the first line of FILE")
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
    from ..model.loading import resolve_device

    for name in ("max_body_bytes", "max_concurrent_requests", "max_batch_size"):
        if getattr(args, name) < 1:
            raise XmodelError(f"--{name.replace('_', '-')}: must be ≥ 1")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise XmodelError("--max-prompt-tokens: must be ≥ 1")
    if not 0 <= args.port <= 65535:
        raise XmodelError(f"--port {args.port}: must be in 0..65535 (0: any free port)")
    api_key = api_key_from(args)
    device = resolve_device(args.device)
    sock = listening_socket(args.host, args.port)  # before loading: a bad address fails in a second, not minutes
    try:
        generator = load_generator(args.model, args.tokenizer, args.dtype, device, args.max_batch_size,
                                   quantize=args.quantize, compile=args.compile)
        name = args.served_model_name or Path(args.model).resolve().name
        app = create_app(generator, name, ServerLimits(
            max_body_bytes=args.max_body_bytes, max_prompt_tokens=args.max_prompt_tokens,
            max_concurrent_requests=args.max_concurrent_requests, max_batch_size=args.max_batch_size,
            api_key=api_key))
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"serving {name} on http://{host}:{sock.getsockname()[1]}/v1 (OpenAI-compatible; Ctrl-C stops)")
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def api_key_from(args) -> str | None:
    """The key clients must send: from --api-key-file, --api-key or $XMODEL_API_KEY (None: no key)."""
    if args.api_key and args.api_key_file:
        raise XmodelError("--api-key and --api-key-file: give one of them")
    if args.api_key:
        print(f"note: --api-key is visible to other users in the process list; ${API_KEY_ENV} or --api-key-file "
              "keep it out", file=sys.stderr)
        return args.api_key
    if args.api_key_file:
        path = Path(args.api_key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise XmodelError(f"--api-key-file {path}: cannot be read ({reason})") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise XmodelError(f"--api-key-file {path}: its first line is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port for uvicorn to serve on. Bound here, so a host that is not this machine's
    or a port in use is our one-line error (uvicorn logs its own and exits with 3)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:  # UnicodeError: a name the IDNA codec refuses
        reason = getattr(e, "strerror", None) or e
        raise XmodelError(f"--host {host}: not a host name or address of this machine ({reason})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart without waiting
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise XmodelError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    return sock
