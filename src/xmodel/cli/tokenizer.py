"""`xmodel tokenizer train|stats`: train the Unigram tokenizer on the configured corpora; measure its fertility."""

from __future__ import annotations

import json

from .common import add_config_args, add_data_root_arg, positive_int


def register(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a tokenizer or measure one",
                       description="Train a Unigram tokenizer on a weighted sample of the data config's sources, "
                                   "or report its fertility against a BPE of the same size.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda args: p.print_help() or 0)

    t = actions.add_parser("train", help="train and save a tokenizer",
                           description="Sample documents from data.sources (weights: data.tokenizer.sources, else "
                                       "the stable-stage weights; held-out documents excluded), train a Unigram "
                                       "tokenizer with byte fallback, special tokens and a chat template, and save "
                                       "it in the transformers layout.")
    t.add_argument("--out", required=True, help="directory to write (must not exist or be empty)")
    add_data_root_arg(t)
    t.add_argument("--vocab-size", type=positive_int, help="overrides data.tokenizer.vocab_size")
    t.add_argument("--model", choices=["unigram", "bpe"], help="overrides data.tokenizer.model")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_config_args(t)
    t.set_defaults(func=run_train)

    s = actions.add_parser("stats", help="fertility on held-out English / Chinese / code vs a same-size BPE",
                           description="Tokens per character and per word on held-out documents of each language "
                                       "of the config's sources, for this tokenizer and for a BPE tokenizer of the "
                                       "same vocabulary size trained in the same run on the same sample.")
    s.add_argument("tokenizer", help="a tokenizer directory")
    add_data_root_arg(s)
    s.add_argument("--chars", type=int, default=500_000, help="held-out characters per language (default 500k)")
    s.add_argument("--no-baseline", action="store_true", help="skip the BPE comparison")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_config_args(s)
    s.set_defaults(func=run_stats)


def _data_config(args):
    from ..data.config import resolve_config_path
    from .common import config_from_args

    args.config = resolve_config_path(args.config)
    return config_from_args(args).data


def run_train(args) -> int:
    from ..tokenizer.loading import tokenizer_meta
    from ..tokenizer.train import train_tokenizer

    cfg = _data_config(args)
    path = train_tokenizer(cfg, args.out, args.data_root, vocab_size=args.vocab_size, model=args.model,
                           overwrite=args.overwrite)
    print(f"wrote {path} (hash {tokenizer_meta(path)['hash']})")
    return 0


def run_stats(args) -> int:
    from ..data.root import data_root
    from ..tokenizer.stats import compare

    cfg = _data_config(args)
    result = compare(args.tokenizer, cfg, data_root(args.data_root), baseline=not args.no_baseline,
                     chars_per_language=args.chars)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    head = ["language", "docs", "chars", "tok/char", "tok/word", "bytes%", "round-trip"]
    if "baseline" in result:
        head += ["BPE tok/char", "BPE tok/word", "ours/BPE"]
    rows = []
    for lang, r in result["languages"].items():
        o = r["ours"]
        row = [lang, str(o["documents"]), f"{o['chars']:,}", f"{o['tokens_per_char']:.3f}",
               f"{o['tokens_per_word']:.3f}", f"{100 * o['byte_fallback_share']:.2f}",
               f"{o['roundtrip_ok']}/{o['documents']}"]
        if "bpe" in r:
            b = r["bpe"]
            row += [f"{b['tokens_per_char']:.3f}", f"{b['tokens_per_word']:.3f}",
                    f"{o['tokens'] / max(1, b['tokens']):.3f}"]
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    print(f"{result['tokenizer']}: {result['vocab_size']:,} entries"
          + (f"; BPE baseline {result['baseline']['vocab_size']:,} entries on the same "
             f"{result['baseline']['sample_chars']:,}-character sample" if "baseline" in result else ""))
    for line in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())
    print("ours/BPE < 1: fewer tokens for the same held-out text. Words: whitespace-separated; a CJK character "
          "counts as one word.")
    return 0
