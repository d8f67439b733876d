"""A Hugging Face tokenizer (tokenizer.json) in the form llama.cpp reads from GGUF metadata.

Three tokenizer.json shapes map onto llama.cpp tokenizers:

* **Unigram** (Xmodel-2's kind; the pieces may carry ▁ for spaces through a Metaspace pre-tokenizer, or raw
  spaces with a regex pre-tokenizer as `xmodel.tokenizer` trains them; optional byte fallback) →
  ``tokenizer.ggml.model = "t5"``, llama.cpp's Unigram tokenizer (Viterbi over the piece scores, like
  `tokenizers`). llama.cpp turns input spaces into ▁ before matching, so raw-space pieces are written with ▁.
  A normaliser becomes a precompiled charsmap (`charsmap.py`).
* **Byte-level BPE** (GPT-2 style: ByteLevel pre-tokenizer and decoder) → ``"gpt2"`` with its merges and the
  ``"gpt-2"`` pre-tokenizer.
* **SentencePiece-style BPE** (Metaspace + BPE with byte fallback, like Llama-2's tokenizer.json) →
  ``"llama"`` (llama.cpp's SentencePiece tokenizer), with score −rank for the token each merge creates so that
  merges happen in the same order.

Known differences, reported as warnings by `vocab_for_gguf` when they can occur:

* llama.cpp's Unigram tokenizer has no byte fallback: a character that no piece covers becomes ``<unk>``
  where `tokenizers` emits its UTF-8 bytes (``<0xE2>`` …). Decoding byte tokens works in both.
* llama.cpp runs Viterbi over whole text fragments, `tokenizers` within each pre-token. With Metaspace
  pieces the two agree up to ties between equal-score segmentations, which is checked here piece by piece;
  with a regex pre-tokenizer llama.cpp may join across its boundaries where that scores higher — in runs of
  whitespace (newlines followed by indentation), as measured on the data root's text. Either way the tokens
  decode to the same text.
* llama.cpp puts the ▁ prefix on every text fragment between special tokens; Metaspace's ``prepend_scheme:
  first`` puts it only at the start of the input.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGUFWriter, TokenType

from ..errors import XmodelError
from .charsmap import build_charsmap, normalizer_mapping

SPACE = "▁"
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
# Normalisers that act character by character, so that a charsmap reproduces them.
PER_CHAR_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Precompiled", "Nmt"}
UNUSED_SCORE = -1e9  # padding entries: never preferred by llama.cpp's Viterbi or merge order


@dataclass
class GgufVocab:
    """Everything written under ``tokenizer.ggml.*``."""

    model: str                      # "t5" | "gpt2" | "llama"
    pre: str                        # llama.cpp pre-tokenizer name
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    add_space_prefix: bool = False
    remove_extra_whitespaces: bool = False
    charsmap: bytes | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None
    warnings: list[str] = field(default_factory=list)

    def write(self, writer: GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        if self.model in ("t5", "llama"):
            writer.add_add_space_prefix(self.add_space_prefix)
            writer.add_remove_extra_whitespaces(self.remove_extra_whitespaces)
        if self.charsmap:
            writer.add_precompiled_charsmap(self.charsmap)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def vocab_for_gguf(tokenizer_dir: str | Path, vocab_size: int) -> GgufVocab:
    """Read `tokenizer_dir` (tokenizer.json + tokenizer_config.json) into a `GgufVocab` of `vocab_size` entries."""
    from transformers import AutoTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise XmodelError(f"{tokenizer_dir}: no tokenizer.json (GGUF needs a fast tokenizer; pass --tokenizer DIR)")
    spec = json.loads(path.read_text(encoding="utf-8"))
    try:
        hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError, TypeError) as e:
        raise XmodelError(f"{tokenizer_dir}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
    kind = spec["model"]["type"]
    if kind == "Unigram":
        vocab = _unigram(spec, hf)
    elif kind == "BPE" and _has(spec.get("pre_tokenizer"), "ByteLevel"):
        vocab = _byte_level_bpe(spec)
    elif kind == "BPE" and (_has(spec.get("pre_tokenizer"), "Metaspace") or _has(spec.get("normalizer"), "Replace")):
        vocab = _sentencepiece_bpe(spec)
    else:
        raise XmodelError(f"{path}: a {kind} tokenizer with this pre-tokenizer has no llama.cpp equivalent "
                          "(supported: Unigram, byte-level BPE, SentencePiece-style BPE)")
    _mark_added_tokens(vocab, spec)
    if len(vocab.tokens) > vocab_size:
        raise XmodelError(f"{path}: {len(vocab.tokens)} tokens do not fit the model's vocab_size={vocab_size}")
    for i in range(len(vocab.tokens), vocab_size):  # the model's embedding rows beyond the tokenizer
        vocab.tokens.append(f"[PAD{i}]")
        vocab.types.append(TokenType.UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(UNUSED_SCORE)
    _special_tokens(vocab, hf)
    return vocab


# ---- the three tokenizer kinds ------------------------------------------------------------------------------

def _unigram(spec: dict, hf) -> GgufVocab:
    model = spec["model"]
    pieces = [p for p, _ in model["vocab"]]
    scores = [float(s) for _, s in model["vocab"]]
    byte_fallback = bool(model.get("byte_fallback"))
    types = [TokenType.BYTE if byte_fallback and BYTE_PIECE.fullmatch(p) else TokenType.NORMAL for p in pieces]
    if model.get("unk_id") is not None:
        types[model["unk_id"]] = TokenType.UNKNOWN
    charsmap, escaped_by_normalizer, prepend_by_normalizer = _normalizer(spec.get("normalizer"), spec)
    metaspace = _find(spec.get("pre_tokenizer"), "Metaspace")
    warnings = []
    if metaspace is None and not escaped_by_normalizer:
        # Pieces hold raw spaces (" the"); llama.cpp's Unigram always turns input spaces into ▁ first, so the
        # pieces are written with ▁ for space — the same strings after that escape — and no ▁ is prepended.
        literal = [p for p, t in zip(pieces, types) if t == TokenType.NORMAL and SPACE in p]
        if literal:
            warnings.append(f"{len(literal)} pieces contain a literal ▁ (e.g. {literal[0]!r}); llama.cpp reads "
                            "it as a space")
        pieces = [p.replace(" ", SPACE) if t == TokenType.NORMAL else p for p, t in zip(pieces, types)]
    elif metaspace is not None and metaspace.get("replacement", SPACE) != SPACE:
        raise XmodelError(f"tokenizer.json: Metaspace replacement {metaspace['replacement']!r} is not ▁")
    prepend = prepend_by_normalizer or (metaspace is not None and _metaspace_prepends(metaspace))
    vocab = GgufVocab(model="t5", pre="default", tokens=pieces, types=[int(t) for t in types], scores=scores,
                      add_space_prefix=prepend, charsmap=charsmap, warnings=warnings)
    if byte_fallback:
        vocab.warnings.append("llama.cpp's Unigram tokenizer has no byte fallback: characters outside the "
                              "vocabulary become <unk> in llama.cpp (generated byte tokens still decode)")
    if metaspace is not None and metaspace.get("prepend_scheme") == "first":
        vocab.warnings.append("Metaspace prepend_scheme 'first': llama.cpp adds the ▁ prefix to text after every "
                              "special token too")
    others = [p["type"] for p in _flatten(spec.get("pre_tokenizer")) if p["type"] not in ("Metaspace", "Digits")]
    if others:
        vocab.warnings.append(f"llama.cpp has no counterpart of the {'/'.join(others)} pre-tokenizer: its Unigram "
                              "runs over whole text, so it may segment differently where a piece could straddle a "
                              "pre-token boundary (runs of whitespace, typically); every segmentation it picks "
                              "decodes to the same text")
    else:
        crossing = _pieces_crossing_pretokens(hf, [p.replace(SPACE, " ") for p in pieces], types)
        if crossing:
            vocab.warnings.append(f"{len(crossing)} vocabulary pieces span pre-tokenizer boundaries (e.g. "
                                  f"{crossing[0]!r}); llama.cpp may segment text around them differently")
    return vocab


def _byte_level_bpe(spec: dict) -> GgufVocab:
    model = spec["model"]
    pre = spec.get("pre_tokenizer")
    byte_level = _find(pre, "ByteLevel")
    parts = _flatten(pre)
    if len(parts) != 1 or not byte_level.get("use_regex", True):
        raise XmodelError("tokenizer.json: only the plain GPT-2 ByteLevel pre-tokenizer maps onto a llama.cpp "
                          f"pre-tokenizer (found {[p['type'] for p in parts]})")
    if byte_level.get("add_prefix_space"):
        raise XmodelError("tokenizer.json: ByteLevel add_prefix_space=true has no llama.cpp equivalent")
    if spec.get("normalizer"):
        raise XmodelError(f"tokenizer.json: normalizer {spec['normalizer']['type']} is not applied by llama.cpp's "
                          "BPE tokenizer")
    tokens = _ordered_vocab(model["vocab"])
    return GgufVocab(model="gpt2", pre="gpt-2", tokens=tokens, types=[int(TokenType.NORMAL)] * len(tokens),
                     merges=_merges(model))


def _sentencepiece_bpe(spec: dict) -> GgufVocab:
    model = spec["model"]
    charsmap, escaped, prepend_by_normalizer = _normalizer(spec.get("normalizer"), spec)
    if charsmap:
        raise XmodelError("tokenizer.json: llama.cpp's SentencePiece tokenizer applies no normaliser; only "
                          "Unigram tokenizers can carry one")
    metaspace = _find(spec.get("pre_tokenizer"), "Metaspace")
    tokens = _ordered_vocab(model["vocab"])
    index = {t: i for i, t in enumerate(tokens)}
    # Merge i creates token a+b; llama.cpp merges the highest-scoring pair first, tokenizers the lowest rank.
    scores = [0.0 if len(t) == 1 else UNUSED_SCORE for t in tokens]
    for rank, merge in enumerate(_merges(model)):
        a, b = merge.split(" ", 1)
        token_id = index.get(a + b)
        if token_id is not None and scores[token_id] == UNUSED_SCORE:
            scores[token_id] = -float(rank)
    byte_fallback = bool(model.get("byte_fallback"))
    types = [int(TokenType.BYTE if byte_fallback and BYTE_PIECE.fullmatch(t) else TokenType.NORMAL) for t in tokens]
    if model.get("unk_token") in index:
        types[index[model["unk_token"]]] = int(TokenType.UNKNOWN)
    prepend = prepend_by_normalizer or (metaspace is not None and _metaspace_prepends(metaspace))
    return GgufVocab(model="llama", pre="default", tokens=tokens, types=types, scores=scores,
                     add_space_prefix=prepend)


# ---- pieces shared by the three -----------------------------------------------------------------------------

def _normalizer(norm: dict | None, spec: dict) -> tuple[bytes | None, bool, bool]:
    """(charsmap, spaces escaped to ▁ by the normaliser, ▁ prepended by the normaliser)."""
    escaped = prepend = False
    kept = []
    for part in _flatten(norm):
        kind = part["type"]
        if kind == "Prepend" and part.get("prepend") == SPACE:
            prepend = True
        elif kind == "Replace" and part.get("pattern") == {"String": " "} and part.get("content") == SPACE:
            escaped = True
        elif kind in PER_CHAR_NORMALIZERS:
            kept.append(part)
        else:
            raise XmodelError(f"tokenizer.json: normalizer {kind} cannot be expressed for llama.cpp "
                              f"(supported: {', '.join(sorted(PER_CHAR_NORMALIZERS))}, ▁ Replace/Prepend)")
    if not kept:
        return None, escaped, prepend
    if len(kept) == 1 and kept[0]["type"] == "Precompiled":
        return base64.b64decode(kept[0]["precompiled_charsmap"]), escaped, prepend
    return _charsmap_for(json.dumps({"type": "Sequence", "normalizers": kept})), escaped, prepend


@functools.lru_cache(maxsize=4)
def _charsmap_for(norm_json: str) -> bytes:
    """The charsmap of a normaliser given as JSON (cached: a second export of the same tokenizer is instant)."""
    normalizer = _normalizer_object(json.loads(norm_json))
    return build_charsmap(normalizer_mapping(normalizer.normalize_str))


def _normalizer_object(norm_spec: dict):
    """A `tokenizers` normaliser built from its JSON (through a throwaway tokenizer, the library's own parser)."""
    from tokenizers import Tokenizer

    shell = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": norm_spec,
             "pre_tokenizer": None, "post_processor": None, "decoder": None,
             "model": {"type": "WordLevel", "vocab": {"x": 0}, "unk_token": "x"}}
    return Tokenizer.from_str(json.dumps(shell)).normalizer


def _pieces_crossing_pretokens(hf, texts: list[str], types: list[int]) -> list[str]:
    """Pieces (as text, spaces unescaped) that the pre-tokenizer would split: where llama.cpp could differ."""
    pre = hf.backend_tokenizer.pre_tokenizer
    if pre is None:
        return []
    crossing = []
    for text, kind in zip(texts, types):
        if kind != TokenType.NORMAL or len(text) < 2:
            continue
        if len(pre.pre_tokenize_str(text)) > 1:
            crossing.append(text)
    return crossing


def _metaspace_prepends(metaspace: dict) -> bool:
    if "prepend_scheme" in metaspace:
        return metaspace["prepend_scheme"] in ("always", "first")
    return bool(metaspace.get("add_prefix_space", True))


def _ordered_vocab(vocab: dict[str, int]) -> list[str]:
    tokens = [None] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        tokens[i] = token
    return [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]


def _merges(model: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _mark_added_tokens(vocab: GgufVocab, spec: dict) -> None:
    """Added tokens: special ones are CONTROL (matched only when parsing specials), others USER_DEFINED."""
    for added in spec.get("added_tokens", []):
        i, content = added["id"], added["content"]
        while len(vocab.tokens) <= i:
            vocab.tokens.append(f"[PAD{len(vocab.tokens)}]")
            vocab.types.append(int(TokenType.UNUSED))
            if vocab.scores is not None:
                vocab.scores.append(UNUSED_SCORE)
        vocab.tokens[i] = content
        if vocab.types[i] in (TokenType.UNKNOWN, TokenType.BYTE):  # byte pieces may be added as specials
            continue
        vocab.types[i] = int(TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
        if vocab.scores is not None:
            vocab.scores[i] = 0.0


def _special_tokens(vocab: GgufVocab, hf) -> None:
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(hf, f"{kind}_token_id", None)
        if token_id is not None:
            vocab.special_ids[kind] = int(token_id)
    plain = hf("a", add_special_tokens=False)["input_ids"]
    full = hf("a")["input_ids"]
    vocab.add_bos = len(full) > len(plain) and full[0] == hf.bos_token_id
    vocab.add_eos = len(full) > len(plain) and full[-1] == hf.eos_token_id
    template = getattr(hf, "chat_template", None)
    vocab.chat_template = template if isinstance(template, str) else (template or {}).get("default")


def _flatten(node: dict | None) -> list[dict]:
    if not node:
        return []
    for key in ("normalizers", "pretokenizers"):
        if node.get("type") == "Sequence" and key in node:
            return [p for child in node[key] for p in _flatten(child)]
    return [node]


def _find(node: dict | None, kind: str) -> dict | None:
    return next((p for p in _flatten(node) if p["type"] == kind), None)


def _has(node: dict | None, kind: str) -> bool:
    return _find(node, kind) is not None
