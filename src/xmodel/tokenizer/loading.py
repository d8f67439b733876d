"""Loading a saved tokenizer, its identity hash, and the check that its ids fit a model.

The layer below everything that reads tokenised data or runs a model: `data` refuses shards of another
tokenizer by `tokenizer_hash`, `inference` and `eval` load with `load_pretrained_tokenizer`, and the trainer,
the shards and the model loaders share `check_vocab_fits`. Nothing here reads corpora or trains.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import XmodelError

META_FILE = "xmodel_tokenizer.json"  # how a tokenizer of ours was trained, saved beside it


def load_tokenizer(path: str | os.PathLike):
    """The `tokenizers.Tokenizer` of a saved tokenizer directory (one-line error when it is not one)."""
    from tokenizers import Tokenizer

    p = Path(path)
    if not p.is_dir():
        raise XmodelError(f"{path}: no such tokenizer directory")
    if not (p / "tokenizer.json").is_file():
        if (p / "tokenizer.model").is_file():
            return _from_sentencepiece(p)
        raise XmodelError(f"{path}: not a tokenizer directory (no tokenizer.json or tokenizer.model)")
    try:
        return Tokenizer.from_file(str(p / "tokenizer.json"))
    except Exception as e:  # the Rust side raises a plain Exception for a corrupt file
        raise XmodelError(f"{path}/tokenizer.json: cannot be read ({str(e).splitlines()[0]})") from None


def _from_sentencepiece(path: Path):
    """A SentencePiece-only folder (tokenizer.model, as some released models ship it), converted in memory to
    the `tokenizers` form by transformers' own converter (which needs the sentencepiece and protobuf packages)."""
    try:
        import google.protobuf  # noqa: F401
        import sentencepiece  # noqa: F401
    except ImportError:
        raise XmodelError(f"{path}: a SentencePiece tokenizer.model needs `pip install sentencepiece protobuf` "
                          f"(or a tokenizer.json beside it)") from None
    backend = getattr(load_pretrained_tokenizer(path), "backend_tokenizer", None)
    if backend is None:
        raise XmodelError(f"{path}: tokenizer.model could not be converted to a fast tokenizer")
    return backend


def load_pretrained_tokenizer(path: str | os.PathLike):
    """A transformers tokenizer (`AutoTokenizer`) of a model or tokenizer directory, or a one-line error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError):
        raise XmodelError(f"{path}: no tokenizer found (pass --tokenizer DIR)") from None


def tokenizer_meta(path: str | os.PathLike) -> dict:
    """The training record saved beside one of our tokenizers ({} for any other tokenizer)."""
    p = Path(path) / META_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def _canonical(spec: dict) -> bytes:
    """The parts of tokenizer.json that decide which ids a text gets."""
    keep = {k: spec.get(k) for k in ("normalizer", "pre_tokenizer", "model")}
    keep["added_tokens"] = sorted((t["id"], t["content"], bool(t.get("special"))) for t in spec.get("added_tokens", []))
    return json.dumps(keep, sort_keys=True, ensure_ascii=False).encode("utf-8")


def tokenizer_hash(tokenizer) -> str:
    """A short fingerprint of a tokenizer's text → ids mapping.

    Accepts a directory (with tokenizer.json), a `tokenizers.Tokenizer`, or a transformers fast tokenizer.
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer) / "tokenizer.json"
        spec = json.loads(path.read_text(encoding="utf-8") if path.is_file() else load_tokenizer(tokenizer).to_str())
    else:
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "to_str"):
            raise XmodelError(f"cannot fingerprint a {type(tokenizer).__name__}: need a fast tokenizer")
        spec = json.loads(backend.to_str())
    return hashlib.sha256(_canonical(spec)).hexdigest()[:16]


def check_vocab_fits(tokenizer_size: int, vocab_size: int, *, tokenizer: str = "tokenizer",
                     model: str = "the model's vocab_size") -> None:
    """Refuse a tokenizer whose ids would index past a model's embedding table; `tokenizer` and `model` name the
    two sides in the error ("tokenizer has 70000 tokens but the model's vocab_size is 65280")."""
    if tokenizer_size > vocab_size:
        raise XmodelError(f"{tokenizer} has {tokenizer_size} tokens but {model} is {vocab_size}")


# Tokens that end a document in pretraining text, most specific first: ours (also Llama 3's), GPT-2 / Qwen /
# SmolLM's, Llama 2 / Mistral's, Gemma's, DeepSeek's. An instruct model's eos_token is often its end-of-turn
# marker (<|im_end|>, <|eot_id|>), which is the wrong separator between pretraining documents.
DOCUMENT_ENDS = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<｜end▁of▁sentence｜>")


def configured_eos_token(tokenizer_dir: str | os.PathLike) -> str | None:
    path = Path(tokenizer_dir) / "tokenizer_config.json"
    if not path.is_file():
        return None
    name = json.loads(path.read_text(encoding="utf-8")).get("eos_token")
    return name.get("content") if isinstance(name, dict) else name


def document_separator(tokenizer_dir: str | os.PathLike, tokenizer, configured: str | None = None) -> tuple[str, int]:
    """(token, id) appended after every document when packing: `configured` if given, else the first of
    `DOCUMENT_ENDS` the vocabulary has, else the tokenizer's eos_token."""
    candidates = [configured] if configured else [*DOCUMENT_ENDS, configured_eos_token(tokenizer_dir)]
    for token in candidates:
        token_id = tokenizer.token_to_id(token) if token else None
        if token_id is not None:
            return token, token_id
    if configured:
        raise XmodelError(f"data.document_separator {configured!r}: not a token of {tokenizer_dir}")
    raise XmodelError(f"{tokenizer_dir}: no end-of-document token (none of {', '.join(DOCUMENT_ENDS)} and no "
                      f"eos_token); name one with data.document_separator")
