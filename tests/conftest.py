import os

import pytest
import torch

import xmodel  # noqa: F401  (registers the Auto classes)
from xmodel import XmodelConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))


def small_config(**overrides) -> XmodelConfig:
    """A few-layer model for fast CPU tests; μP values default to neutral unless overridden."""
    values = dict(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, scale_emb=1.0, scale_depth=None,
                  dim_model_base=None, initializer_range=0.02, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    values.update(overrides)
    return XmodelConfig(**values)


@pytest.fixture
def char_tokenizer_dir(tmp_path):
    """A character-level tokenizer saved in the transformers layout (real `tokenizers` objects, tiny vocab)."""
    from .tokenizer_helpers import char_tokenizer

    fast = char_tokenizer()
    path = tmp_path / "tokenizer"
    fast.save_pretrained(path)
    return path

# Session fixtures of the tokenizer / data tests (a small config over the data root, a tokenizer, prepared shards).
from .data_helpers import prepared, shared_data, small_cfg, tokenizer_dir  # noqa: E402,F401
