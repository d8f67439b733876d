"""Tokenizer fertility on held-out text, compared with a BPE tokenizer of the same size trained on the same sample.

Fertility = tokens per character and per word (a CJK character counts as a word; otherwise words are
whitespace-separated). Held-out text = documents of the configured sources that the held-out split (content
hash < heldout.fraction) keeps out of tokenizer training and of the training shards, grouped by the sources'
`language` tag (en, zh, code, ...).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import XmodelError


def heldout_texts(cfg, root: Path, chars_per_language: int = 500_000) -> dict[str, list[str]]:
    """Held-out documents per language (source `language`, else the source name), up to a character budget."""
    from .train import split_texts

    if cfg.heldout.fraction <= 0:
        raise XmodelError("data.heldout.fraction is 0: there is no held-out text to measure on")
    out: dict[str, list[str]] = {}
    used: dict[str, int] = {}
    for source in cfg.sources:
        lang = source.language or source.name
        if used.get(lang, 0) >= chars_per_language:
            continue
        for text, _ in split_texts(source, root, cfg.heldout.fraction, "heldout"):
            out.setdefault(lang, []).append(text)
            used[lang] = used.get(lang, 0) + len(text)
            if used[lang] >= chars_per_language:
                break
    if not out:
        raise XmodelError("no held-out documents found in the configured sources")
    return out


def fertility(tok, texts: list[str]) -> dict:
    """Counts and ratios of one `tokenizers.Tokenizer` on a list of texts."""
    from ..data.simhash import words

    encs = tok.encode_batch(texts, add_special_tokens=False)
    tokens = sum(len(e.ids) for e in encs)
    byte_ids = {tok.token_to_id(f"<0x{b:02X}>") for b in range(256)} - {None}
    fallback = sum(1 for e in encs for i in e.ids if i in byte_ids)
    chars = sum(len(t) for t in texts)
    n_words = sum(len(words(t)) for t in texts)
    roundtrip = sum(tok.decode(e.ids, skip_special_tokens=False) == t for e, t in zip(encs, texts))
    return {"documents": len(texts), "chars": chars, "words": n_words, "tokens": tokens,
            "tokens_per_char": tokens / max(1, chars), "tokens_per_word": tokens / max(1, n_words),
            "byte_fallback_share": fallback / max(1, tokens), "roundtrip_ok": roundtrip}


def compare(tokenizer_dir: str | Path, cfg, root: Path, *, baseline: bool = True,
            chars_per_language: int = 500_000, log=print) -> dict:
    """Fertility of the saved tokenizer and (with `baseline`) of a BPE of the same size on the same sample."""
    from .loading import load_tokenizer, tokenizer_meta
    from .train import _train_model, training_sample

    tok = load_tokenizer(tokenizer_dir)
    meta = tokenizer_meta(tokenizer_dir)
    texts = heldout_texts(cfg, root, chars_per_language)
    result = {"tokenizer": str(tokenizer_dir), "vocab_size": tok.get_vocab_size(), "languages": {}}
    bpe = None
    if baseline:
        sample_chars = int(meta.get("settings", {}).get("sample_chars", cfg.tokenizer.sample_chars))
        sample = training_sample(cfg, root, sample_chars)
        got = {n: sum(map(len, d)) for n, d in sample.items()}
        if meta.get("sample_chars") and got != meta["sample_chars"]:
            log("warning: this config's tokenizer sample differs from the one the tokenizer was trained on; "
                "the BPE baseline is trained on this config's sample")
        tcfg = cfg.tokenizer
        bpe = _train_model([t for d in sample.values() for t in d], tok.get_vocab_size(), tcfg, "bpe")
        result["baseline"] = {"model": "bpe", "vocab_size": bpe.get_vocab_size(), "sample_chars": sum(got.values())}
    for lang, docs in texts.items():
        row = {"ours": fertility(tok, docs)}
        if bpe is not None:
            row["bpe"] = fertility(bpe, docs)
        result["languages"][lang] = row
    return result
