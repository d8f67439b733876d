"""save_pretrained → AutoModelForCausalLM.from_pretrained, and checkpoints that disagree with their config."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from xmodel import XmodelForCausalLM
from xmodel.errors import XmodelError

from .conftest import small_config


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_identical_logits(tmp_path, tied):
    torch.manual_seed(0)
    model = XmodelForCausalLM(small_config(scale_emb=5.0, scale_depth=1.1, dim_model_base=16,
                                           tie_word_embeddings=tied)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "xmodel"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is XmodelForCausalLM
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied
    ids = torch.randint(3, 211, (2, 13))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


@pytest.mark.parametrize("field,value,tensor", [
    ("vocab_size", 300, r"tensor model\.embed_tokens\.weight has shape \[211, 64\]"),
    ("intermediate_size", 128, r"tensor model\.layers\.\d\.mlp\.(gate|up|down)_proj\.weight"),
    ("num_key_value_heads", 4, r"tensor model\.layers\.\d\.self_attn\.[kv]_proj\.weight"),
])
def test_config_disagreeing_with_weights_names_the_tensor(tmp_path, field, value, tensor):
    XmodelForCausalLM(small_config()).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(XmodelError, match=tensor) as err:
        AutoModelForCausalLM.from_pretrained(tmp_path)
    assert "\n" not in str(err.value) and field in str(err.value)
