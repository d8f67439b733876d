"""Each of the five μP operations of Xmodel-2 Table 6, tested against its definition."""

import math

import pytest
import torch

from xmodel import XmodelForCausalLM, mup_param_groups

from .conftest import small_config


def copy_weights(src, dst):
    dst.load_state_dict(src.state_dict())
    return dst.eval()


def test_embedding_output_scaled_by_scale_emb():
    torch.manual_seed(0)
    base = XmodelForCausalLM(small_config(scale_emb=3.0)).eval()
    doubled = copy_weights(base, XmodelForCausalLM(small_config(scale_emb=6.0)))
    ids = torch.randint(3, 211, (2, 9))
    with torch.no_grad():
        h1 = base(ids, output_hidden_states=True).hidden_states[0]
        h2 = doubled(ids, output_hidden_states=True).hidden_states[0]
        raw = base.model.embed_tokens(ids)
    assert torch.allclose(h1, raw * 3.0)
    assert torch.allclose(h2, 2 * h1)


def test_block_outputs_scaled_before_residual_add():
    torch.manual_seed(0)
    cfg = small_config(scale_depth=2.5, num_hidden_layers=4)
    model = XmodelForCausalLM(cfg).eval()
    r = 2.5 / math.sqrt(4)
    assert model.model.layers[0].residual_scale == pytest.approx(r)
    captured = {}
    layer = model.model.layers[1]
    layer.self_attn.register_forward_hook(lambda m, i, o: captured.__setitem__("attn", o))
    layer.mlp.register_forward_hook(lambda m, i, o: captured.__setitem__("mlp", o))
    layer.register_forward_hook(lambda m, i, o: captured.__setitem__("io", (i[0], o)))
    with torch.no_grad():
        model(torch.randint(3, 211, (2, 7)))
    x, y = captured["io"]
    assert torch.allclose(y, x + r * captured["attn"] + r * captured["mlp"], atol=1e-6)
    # scale_depth = sqrt(L) is the neutral setting.
    assert XmodelForCausalLM(small_config(scale_depth=2.0, num_hidden_layers=4)).model.layers[0].residual_scale == 1.0


def test_hidden_weight_init_std_scales_with_width():
    torch.manual_seed(0)
    cfg = small_config(hidden_size=512, intermediate_size=768, num_attention_heads=8, num_hidden_layers=1,
                       dim_model_base=32, initializer_range=0.1)
    model = XmodelForCausalLM(cfg)
    hidden_std = 0.1 / math.sqrt(512 / 32)
    for name, p in model.named_parameters():
        measured = p.float().std().item()
        if p.ndim == 1:
            assert torch.all(p == 1), name  # norm gains start at 1
        elif "embed_tokens" in name:
            assert measured == pytest.approx(0.1, rel=0.05), name
        else:
            assert measured == pytest.approx(hidden_std, rel=0.05), name


def test_learning_rate_groups():
    cfg = small_config(hidden_size=128, num_attention_heads=4, dim_model_base=32)
    model = XmodelForCausalLM(cfg)
    groups = {g["name"]: g for g in mup_param_groups(model, lr=0.01, weight_decay=0.1)}
    assert groups["hidden_2d"]["lr"] == pytest.approx(0.01 / 4)
    assert groups["embedding"]["lr"] == pytest.approx(0.01)
    assert groups["norms"]["lr"] == pytest.approx(0.01) and groups["norms"]["weight_decay"] == 0.0
    grouped = [p for g in groups.values() for p in g["params"]]
    assert len(grouped) == len({id(p) for p in model.parameters()})  # every parameter once (tied head once)
    assert all(p.ndim == 2 for p in groups["hidden_2d"]["params"])


def test_logits_divided_by_width_mult():
    torch.manual_seed(0)
    scaled = XmodelForCausalLM(small_config(dim_model_base=16)).eval()  # m = 64 / 16 = 4
    neutral = copy_weights(scaled, XmodelForCausalLM(small_config()))
    ids = torch.randint(3, 211, (2, 11))
    with torch.no_grad():
        assert torch.allclose(scaled(ids).logits * 4, neutral(ids).logits, atol=1e-5)


def test_neutral_settings_flag():
    assert small_config().is_neutral_mup
    assert not small_config(scale_emb=2.0).is_neutral_mup
