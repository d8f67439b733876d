"""Preset parameter counts: closed form == the built model, and the reports' sizes."""

import pytest
import torch

from xmodel import XmodelForCausalLM
from xmodel.config import PRESETS, load_config
from xmodel.model.stats import count_parameters, model_stats


@pytest.mark.parametrize("name", list(PRESETS))
def test_closed_form_count_equals_built_model(name):
    cfg = load_config(name).model
    with torch.device("meta"):
        model = XmodelForCausalLM(cfg)
    built = sum(p.numel() for p in model.parameters())  # tied weights appear once
    total, embedding = count_parameters(cfg)
    assert built == total
    assert embedding == model.model.embed_tokens.weight.numel() * (1 if cfg.tie_word_embeddings else 2)


def test_report_sizes():
    def total(name):
        return count_parameters(load_config(name).model)[0]

    assert 1.2e9 <= total("xmodel-2-1.2b") <= 1.3e9          # "1.2B" with tied embeddings (≈1.25B)
    assert 1.05e9 <= total("xmodel-lm-1.1b") <= 1.2e9        # "1.1B", untied 32K vocabulary
    assert 5.5e6 <= model_stats(load_config("nano").model).params_non_embedding <= 6.5e6   # "6M"
    assert 50e6 <= model_stats(load_config("tiny").model).params_non_embedding <= 58e6     # "54M"


def test_xmodel2_preset_fields():
    m = load_config("xmodel-2-1.2b").model
    assert (m.hidden_size, m.intermediate_size, m.num_attention_heads, m.num_key_value_heads,
            m.num_hidden_layers, m.max_position_embeddings, m.vocab_size) == (1536, 3840, 24, 8, 48, 4096, 65280)
    assert (m.scale_emb, m.scale_depth, m.dim_model_base, m.initializer_range) == (12.0, 1.4, 256, 0.1)
    assert m.tie_word_embeddings
    lm = load_config("xmodel-lm-1.1b").model
    assert lm.is_neutral_mup and not lm.tie_word_embeddings and lm.initializer_range == 0.02


def test_flops_per_token_close_to_6n():
    cfg = load_config("xmodel-2-1.2b").model
    stats = model_stats(cfg, seq_len=4096)
    n = stats.params_total
    # 6N plus attention (12·L·T·d) is the usual estimate.
    expected = 6 * n + 12 * cfg.num_hidden_layers * 4096 * cfg.hidden_size
    assert stats.flops_per_token_train == pytest.approx(expected, rel=0.02)
    assert stats.kv_cache_bytes_per_token == 2 * 48 * 8 * 64 * 2
