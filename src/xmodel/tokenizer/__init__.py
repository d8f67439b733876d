"""Tokenizer: Unigram training on the corpora, special tokens and chat template, identity hash, fertility stats.

    from xmodel.tokenizer import train_tokenizer, tokenizer_hash
    path = train_tokenizer(cfg.data, "runs/tokenizer")        # cfg = xmodel.config.load_config(...)
    AutoTokenizer.from_pretrained(path).apply_chat_template(messages)

Layers: `config`, `special` and `loading` sit below the data pipeline (which imports them); `train` and `stats`
read the corpora through the data pipeline's readers, so they sit above it.
"""

from .config import TokenizerConfig
from .loading import load_tokenizer, tokenizer_hash, tokenizer_meta
from .special import BOS, CHAT_TEMPLATE, EOS, IM_END, IM_START, PAD, SPECIAL_TOKENS, UNK, render_chat
from .train import train_tokenizer

__all__ = ["TokenizerConfig", "train_tokenizer", "load_tokenizer", "tokenizer_hash", "tokenizer_meta",
           "render_chat", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "BOS", "EOS", "UNK", "PAD", "IM_START", "IM_END"]
