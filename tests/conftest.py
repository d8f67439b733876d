import os

import pytest
import torch

# Inductor's FX-graph cache key leaves out the vector ISA: a cached graph brings C++ source generated for the ISA of the
# run that compiled it, built again for the current one, and a run capped with ATEN_CPU_CAPABILITY (emulating an AVX2
# CPU) then computes garbage from an uncapped run's kernels, and the other way round. Keep their caches apart (before
# `import xmodel`, which fixes the cache folder).
if (capability := os.environ.get("ATEN_CPU_CAPABILITY")) and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default_cache_dir()}_{capability.lower()}"

import xmodel  # noqa: E402,F401  (registers the Auto classes)
from xmodel import XmodelConfig  # noqa: E402

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
