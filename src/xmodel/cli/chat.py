"""`xmodel chat`: talk to a model in the terminal, with its chat template and streamed replies."""

from __future__ import annotations

import sys
import threading

from ..errors import XmodelError

HELP = "commands: /reset (forget the conversation), /exit (or Ctrl-D); Ctrl-C stops a reply"


def add_sampling_args(parser, max_new_tokens: int, temperature: float) -> None:
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="tokens per reply at most")
    g.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (1 = off)")
    g.add_argument("--seed", type=int, help="make sampling reproducible")


def add_model_args(parser) -> None:
    parser.add_argument("model", help="model directory: Xmodel, or a Llama / MiniCPM checkpoint (converted on load)")
    parser.add_argument("--tokenizer", help="tokenizer directory, if not the model directory")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights and compute precision (auto: the checkpoint's, but fp32 on a CPU where "
                             "its bf16/fp16 products measure slower than fp32's, as on AVX2-only CPUs)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"],
                        help="int8: int8 weight-only linear layers, bf16 elsewhere — about 1.6x faster decoding "
                             "at batch 1 on CPU, slightly different logits (default none)")
    parser.add_argument("--compile", action="store_true",
                        help="decode through torch.compile (frozen weights, max-autotune GEMMs): about 2x "
                             "faster in bf16 on CPU, after compiling for a minute or two per batch size and "
                             "context bucket of 256 tokens")


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal",
                       description="A read-eval-print loop: each line you type is a user turn; the model's reply "
                                   "streams back. The conversation is rendered with the tokenizer's chat template; "
                                   "the oldest turns are dropped when it outgrows the context. " + HELP + ".")
    add_model_args(p)
    p.add_argument("--system", help="a system message that starts the conversation")
    add_sampling_args(p, max_new_tokens=512, temperature=0.7)
    p.set_defaults(func=run)


def sampling_from_args(args):
    from ..inference.sampling import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed).validate()


def read_turn(stream) -> str | None:
    """The next line typed, without its newline (None at the end of input). Read as bytes where the stream has
    them, so a line that is not UTF-8 is one `XmodelError` for that line, not a crash in the tokenizer."""
    raw = stream.buffer.readline() if hasattr(stream, "buffer") else stream.readline()
    if not raw:
        return None
    try:
        # A text stream decoded with surrogateescape (Python's stdin under a C locale) holds bad bytes as
        # lone surrogates, which encoding to UTF-8 finds.
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeError:
        raise XmodelError("that line is not valid UTF-8 text (ignored; check the terminal's encoding)") from None


def run(args) -> int:
    from ..inference.chat import ChatSession
    from ..inference.runtime import load_generator
    from ..model.loading import resolve_device

    params = sampling_from_args(args)
    generator = load_generator(args.model, args.tokenizer, args.dtype, resolve_device(args.device), 1,
                               quantize=args.quantize, compile=args.compile)
    if not getattr(generator.tokenizer, "chat_template", None):
        raise XmodelError(f"{args.tokenizer or args.model}: the tokenizer has no chat template")
    session = ChatSession(generator, params, args.system)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"xmodel chat — {HELP}", file=sys.stderr)
    while True:
        if interactive:
            print("you> ", end="", flush=True, file=sys.stderr)
        try:
            text = read_turn(sys.stdin)
        except XmodelError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        if text is None:
            break
        if not text.strip():
            continue
        if text.strip() == "/exit":
            break
        if text.strip() == "/reset":
            session.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        cancel = threading.Event()
        try:
            for piece in session.reply(text, cancel):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            cancel.set()
            print("\n(stopped)", file=sys.stderr)
        except XmodelError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0
