"""Named model shapes. Each preset is a set of `XmodelConfig` values (the rest are the class defaults).

* ``xmodel-2-1.2b`` – Xmodel-2 (report Table 1): hidden 1536, intermediate 3840, 24 heads / 8 KV heads,
  48 layers, context 4096, Unigram vocab 65,280, tied embeddings. μP values scale_emb 12, scale_depth 1.4,
  dim_model_base 256, init_std 0.1 are MiniCPM's and the later Xmodel-2.5 release's: Xmodel-2's own config
  is not public.
* ``xmodel-lm-1.1b`` – Xmodel-LM (its released config): hidden 2048, intermediate 5632, 24 layers, 32 heads /
  4 KV heads, vocab 32,000, untied embeddings, init std 0.02, no μP (neutral multipliers).
* ``nano`` / ``tiny`` – the wind-tunnel sizes of the Xmodel-2 appendix (~6M and ~54M parameters, counted
  without the embedding), deep-and-thin with head_dim 64 and Xmodel-2's μP settings. The report gives only
  their sizes; the shapes are ours.
"""

from __future__ import annotations

from ..errors import ConfigError

XMODEL2_MUP = {"scale_emb": 12.0, "scale_depth": 1.4, "dim_model_base": 256, "initializer_range": 0.1}

PRESETS: dict[str, dict] = {
    "xmodel-2-1.2b": {
        "vocab_size": 65280, "hidden_size": 1536, "intermediate_size": 3840, "num_hidden_layers": 48,
        "num_attention_heads": 24, "num_key_value_heads": 8, "max_position_embeddings": 4096,
        "tie_word_embeddings": True, **XMODEL2_MUP,
    },
    "xmodel-lm-1.1b": {
        "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
        "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 4096,
        "tie_word_embeddings": False, "initializer_range": 0.02, "rms_norm_eps": 1e-5,
        "scale_emb": 1.0, "scale_depth": None, "dim_model_base": None,
    },
    "nano": {
        "vocab_size": 65280, "hidden_size": 256, "intermediate_size": 640, "num_hidden_layers": 9,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "tie_word_embeddings": True, **XMODEL2_MUP,
    },
    "tiny": {
        "vocab_size": 65280, "hidden_size": 512, "intermediate_size": 1280, "num_hidden_layers": 21,
        "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "tie_word_embeddings": True, **XMODEL2_MUP,
    },
}


def preset_values(name: str) -> dict:
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ConfigError(f"preset {name!r}: unknown (known: {', '.join(PRESETS)})") from None
