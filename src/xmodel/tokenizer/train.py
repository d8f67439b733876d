"""Training the Unigram tokenizer (Hugging Face `tokenizers`) on a weighted sample of the corpora.

Design (the Xmodel-2 report uses a Unigram model; the details below are ours):

- No normaliser: the text is kept byte-exact, so decode(encode(x)) == x for every UTF-8 string.
- SentencePiece-style pieces: a space belongs to the start of the following word (" the"), CJK text is
  segmented by the Unigram model itself, every digit is its own piece, and runs of whitespace (code
  indentation, blank lines) are pieces of their own, so the model can learn "    " and "\\n\\n".
- Byte fallback: 256 pieces <0x00>..<0xFF> spell any character the vocabulary lacks; <unk> never appears.
- Special tokens: <|unk|> 0, <|begin_of_text|> 1, <|end_of_text|> 2, <|pad|> 3, <|im_start|> 4, <|im_end|> 5;
  nothing is added automatically when encoding (documents are separated by EOS in the packed data).
- Saved with `PreTrainedTokenizerFast.save_pretrained`, with a ChatML-style chat template, so
  `AutoTokenizer.from_pretrained(dir)` loads it; `xmodel_tokenizer.json` beside it records how it was trained.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from ..errors import XmodelError
from .loading import META_FILE, tokenizer_hash
from .special import BOS, BYTE_PIECES, CHAT_TEMPLATE, EOS, IM_END, IM_START, PAD, SPECIAL_TOKENS, UNK

PRE_TOKENIZE_PATTERN = r" ?[\p{L}\p{M}]+| ?[^\s\p{L}\p{M}\p{N}]+|\p{N}|\s+(?!\S)|\s+"
MAX_DOC_CHARS = 100_000  # a longer document contributes its first 100k characters to the sample


def pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex(PRE_TOKENIZE_PATTERN), behavior="isolated")


def decoder():
    from tokenizers import decoders

    return decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])


# ---- the training sample ------------------------------------------------------------------------------------

def sample_shares(cfg) -> dict[str, float]:
    """Source name → share of the tokenizer sample (config `tokenizer.sources`, else the stable weights)."""
    from ..data.weights import normalise_weights

    if cfg.tokenizer.sources:
        return normalise_weights(cfg.tokenizer.sources, "tokenizer.sources")
    return normalise_weights({s.name: s.weight for s in cfg.sources}, "sources[].weight")


def split_texts(source, root: Path, heldout_fraction: float, split: str) -> Iterator[tuple[str, int]]:
    """(text, low half of its content hash) of each usable document of a pretraining source (a `SourceConfig`)
    that the held-out rule puts in `split` ("train" or "heldout"), in file order."""
    from ..data.heldout import is_heldout
    from ..data.ingest import SkipLog, SkipRecord
    from ..data.plan import InputSource
    from ..data.simhash import content_hash

    held_out = split == "heldout"
    inp = InputSource.pretrain(0, source, root)
    for rec in inp.records(SkipLog()):
        try:
            _, text = inp.document(rec)
        except SkipRecord:  # prepare counts and reports skips; the sample just leaves them out
            continue
        hi, lo = content_hash(text)
        if is_heldout(hi, heldout_fraction) == held_out:
            yield text, lo


def training_sample(cfg, root: Path, total_chars: int | None = None) -> dict[str, list[str]]:
    """A uniform random sample of training (not held-out) documents per source, by content hash, sized by share.

    Priority sampling: each document's priority is a hash of its content, and the documents with the smallest
    priorities are kept until the source's character budget is full — deterministic, one pass, bounded memory.
    """
    total_chars = total_chars or cfg.tokenizer.sample_chars
    by_name = {s.name: s for s in cfg.sources}
    out: dict[str, list[str]] = {}
    for name, share in sample_shares(cfg).items():
        budget = int(total_chars * share)
        heap: list[tuple[int, int, str]] = []  # (-priority, -index, text): a max-heap of the kept documents
        chars = 0
        for index, (text, lo) in enumerate(split_texts(by_name[name], root, cfg.heldout.fraction, "train")):
            text = text[:MAX_DOC_CHARS]
            heapq.heappush(heap, (-lo, -index, text))
            chars += len(text)
            while chars - len(heap[0][2]) >= budget and len(heap) > 1:
                chars -= len(heapq.heappop(heap)[2])
        out[name] = [t for _, _, t in sorted(heap, key=lambda x: -x[1])]
    return out


# ---- training -----------------------------------------------------------------------------------------------

def keep_frequent_chars(texts: list[str], coverage: float, max_chars: int) -> list[str]:
    """Drop the rarest characters from the training texts (as SentencePiece's character_coverage does): the
    most frequent characters covering `coverage` of all occurrences are kept, at most `max_chars` of them.
    Dropped characters are still encodable — through byte fallback."""
    from collections import Counter

    counts = Counter()
    for t in texts:
        counts.update(t)
    total = sum(counts.values())
    keep, covered = set(), 0
    for ch, n in counts.most_common():
        if len(keep) >= max_chars or (covered >= coverage * total and len(keep) > 0):
            break
        keep.add(ch)
        covered += n
    if len(keep) == len(counts):
        return texts
    drop = {ord(ch): None for ch in counts if ch not in keep}
    return [t.translate(drop) for t in texts]


def _train_model(texts: list[str], vocab_size: int, tcfg, model: str):
    """A `tokenizers.Tokenizer` of exactly `vocab_size` entries (trained pieces + specials + 256 bytes)."""
    from tokenizers import Tokenizer, models, trainers

    n_trained = vocab_size - len(BYTE_PIECES)
    # The Unigram trainer needs every character of its input in the vocabulary: leave room for pieces.
    texts = keep_frequent_chars(texts, tcfg.character_coverage, max(64, n_trained - 256))
    if model == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=n_trained, special_tokens=SPECIAL_TOKENS, unk_token=UNK,
                                          max_piece_length=tcfg.max_piece_length,
                                          shrinking_factor=tcfg.shrinking_factor,
                                          n_sub_iterations=tcfg.n_sub_iterations, show_progress=False)
    else:
        tok = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True))
        trainer = trainers.BpeTrainer(vocab_size=n_trained, special_tokens=SPECIAL_TOKENS,
                                      max_token_length=tcfg.max_piece_length, show_progress=False)
    tok.pre_tokenizer = pre_tokenizer()
    try:
        tok.train_from_iterator(texts, trainer, length=len(texts))
    except Exception as e:  # the Rust trainer raises plain Exceptions
        raise XmodelError(f"{model} training failed: {e}") from None
    spec = json.loads(tok.to_str())
    if model == "unigram":
        vocab = [tuple(v) for v in spec["model"]["vocab"]]
        floor = min(score for _, score in vocab) - 1.0
        vocab += [(piece, floor) for piece in BYTE_PIECES]
        tok.model = models.Unigram(vocab, unk_id=0, byte_fallback=True)
    else:
        vocab = spec["model"]["vocab"]
        for piece in BYTE_PIECES:
            vocab.setdefault(piece, len(vocab))
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["model"]["merges"]]
        tok.model = models.BPE(vocab, merges, unk_token=UNK, byte_fallback=True)
    tok.decoder = decoder()
    return tok


def save_tokenizer(tok, out_dir: Path, meta: dict) -> Path:
    """Save in the transformers layout (tokenizer.json + config + chat template) and the training metadata."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=PAD, additional_special_tokens=[IM_START, IM_END],
                                   clean_up_tokenization_spaces=False, add_bos_token=False, add_eos_token=False)
    fast.chat_template = CHAT_TEMPLATE
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fast.save_pretrained(tmp)
    meta = dict(meta, hash=tokenizer_hash(tmp), vocab_size=tok.get_vocab_size())
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def train_tokenizer(cfg, out_dir: str | os.PathLike, data_root: str | os.PathLike | None = None, *,
                    vocab_size: int | None = None, model: str | None = None, overwrite: bool = False,
                    sample: dict[str, list[str]] | None = None, log=print) -> Path:
    """Train a tokenizer on a weighted sample of `cfg.sources` (a `DataConfig`) and save it to `out_dir`.

    vocab_size / model override `cfg.tokenizer`. Returns the directory, loadable with
    `transformers.AutoTokenizer.from_pretrained` (chat template and special tokens included).
    """
    from ..data.root import data_root as resolve_root

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise XmodelError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    tcfg = cfg.tokenizer
    vocab_size = vocab_size or tcfg.vocab_size
    model = model or tcfg.model
    if vocab_size < len(SPECIAL_TOKENS) + len(BYTE_PIECES) + 100:
        raise XmodelError(f"vocab_size {vocab_size}: too small (262 entries are special and byte tokens)")
    if not cfg.sources:
        raise XmodelError("data.sources: no sources configured to train the tokenizer on")
    root = resolve_root(data_root)
    t0 = time.perf_counter()
    if sample is None:
        sample = training_sample(cfg, root)
    texts = [t for docs in sample.values() for t in docs]
    if not texts:
        raise XmodelError("tokenizer sample is empty: the sources gave no usable documents")
    chars = {name: sum(map(len, docs)) for name, docs in sample.items()}
    log(f"tokenizer sample: {sum(chars.values()):,} characters from {len(texts):,} documents "
        f"({', '.join(f'{n} {c:,}' for n, c in chars.items())}) in {time.perf_counter() - t0:.1f}s")
    t1 = time.perf_counter()
    tok = _train_model(texts, vocab_size, tcfg, model)
    seconds = time.perf_counter() - t1
    log(f"trained {model} tokenizer: {tok.get_vocab_size():,} entries in {seconds:.1f}s")
    from dataclasses import asdict

    meta = {"model": model, "sample_chars": chars, "documents": len(texts), "train_seconds": round(seconds, 2),
            "settings": asdict(tcfg) | {"vocab_size": vocab_size, "model": model},
            "heldout_fraction": cfg.heldout.fraction, "pre_tokenizer": PRE_TOKENIZE_PATTERN}
    return save_tokenizer(tok, out, meta)
