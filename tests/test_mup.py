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


# Who gets lr/m and weight decay, written out from the sources (not from the code under test):
# Xmodel-2.5's Megatron scripts (--lr for all but embedding/output, --decoupled-lr for those, the base rate;
# --no-decay-norm-bias-embed), Xmodel-2 Table 6 (2-D tensors at lr/m, other parts at the base lr), and the
# earlier grouping of this project. (lr multiplier, weight decay) for hidden 2-D, embedding + untied head, norms.
POLICY_TABLE = {
    "xmodel-2.5": {"hidden_2d": (1 / 4, 0.1), "embedding": (1, 0.0), "norms": (1 / 4, 0.0)},
    "table6": {"hidden_2d": (1 / 4, 0.1), "embedding": (1 / 4, 0.1), "norms": (1, 0.0)},
    "standard": {"hidden_2d": (1 / 4, 0.1), "embedding": (1, 0.1), "norms": (1, 0.0)},
}


@pytest.mark.parametrize("policy", sorted(POLICY_TABLE))
@pytest.mark.parametrize("tied", [True, False])
def test_learning_rate_groups(policy, tied):
    cfg = small_config(hidden_size=128, num_attention_heads=4, dim_model_base=32, tie_word_embeddings=tied)
    model = XmodelForCausalLM(cfg)  # m = 128 / 32 = 4
    groups = {g["name"]: g for g in mup_param_groups(model, lr=0.01, weight_decay=0.1, policy=policy)}
    for name, (scale, decay) in POLICY_TABLE[policy].items():
        assert groups[name]["lr"] == pytest.approx(0.01 * scale), name
        assert groups[name]["weight_decay"] == decay, name
    names = {id(p): n for n, p in model.named_parameters()}
    embedding = {names[id(p)] for p in groups["embedding"]["params"]}
    assert embedding == ({"model.embed_tokens.weight"} if tied else {"model.embed_tokens.weight", "lm_head.weight"})
    grouped = [p for g in groups.values() for p in g["params"]]
    assert len(grouped) == len({id(p) for p in model.parameters()})  # every parameter once (tied head once)
    assert all(p.ndim == 2 for p in groups["hidden_2d"]["params"])
    assert all(p.ndim == 1 for p in groups["norms"]["params"])


def test_default_policy_is_the_authors_scripts_and_unknown_is_refused():
    model = XmodelForCausalLM(small_config(dim_model_base=32))
    assert mup_param_groups(model, 0.01) == mup_param_groups(model, 0.01, policy="xmodel-2.5")
    with pytest.raises(ValueError, match="mup_lr_policy: 'nope'"):
        mup_param_groups(model, 0.01, policy="nope")


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
