"""μP-folded export to plain Llama, and import of MiniCPM/Xmodel-2 and Llama layouts (exact logits)."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from xmodel import XmodelForCausalLM
from xmodel.cli.main import main
from xmodel.export.importing import import_checkpoint
from xmodel.export.llama import export_llama, to_llama

from .conftest import small_config

# Non-neutral μP on purpose: scale_emb ≠ 1, scale_depth ≠ √L, d_base ≠ d.
MUP = dict(scale_emb=9.0, scale_depth=1.7, dim_model_base=16)


def random_model(seed=0, **overrides) -> XmodelForCausalLM:
    torch.manual_seed(seed)
    cfg = small_config(initializer_range=0.3, rope_theta=50000.0, **{**MUP, **overrides})
    model = XmodelForCausalLM(cfg).eval()
    with torch.no_grad():  # norm gains away from 1 so that folding them is visible
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.mark.parametrize("tied", [True, False])
def test_folded_llama_has_the_same_logits_and_greedy_output(tied):
    model = random_model(tie_word_embeddings=tied)
    llama = to_llama(model)
    assert type(llama) is LlamaForCausalLM
    assert math.isclose(llama.config.rms_norm_eps, model.config.rms_norm_eps / 81)
    ids = torch.randint(3, 211, (3, 48))
    ours, theirs = logits(model, ids), logits(llama, ids)
    assert ours.std() > 0.5  # the comparison is not between near-zero logits
    assert (ours - theirs).abs().max() <= 1e-4
    assert (llama.lm_head.weight.data_ptr() == llama.model.embed_tokens.weight.data_ptr()) == tied
    prompt = ids[:1, :6]
    kwargs = dict(max_new_tokens=24, min_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(model.generate(prompt, **kwargs), llama.generate(prompt, **kwargs))


def test_eps_fold_matters():
    """Keeping Llama's ε unchanged would be measurably wrong when the stream is small: the fold is not vacuous."""
    model = random_model(scale_emb=40.0)
    llama = to_llama(model)
    ids = torch.randint(3, 211, (2, 16))
    exact = (logits(model, ids) - logits(llama, ids)).abs().max()
    llama.config.rms_norm_eps = model.config.rms_norm_eps
    for module in llama.modules():
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon = model.config.rms_norm_eps
    wrong = (logits(model, ids) - logits(llama, ids)).abs().max()
    assert exact <= 1e-4 < wrong


def test_export_cli_writes_a_plain_llama_checkpoint_and_import_restores_mup(tmp_path, char_tokenizer_dir):
    model = random_model(seed=3)
    model.save_pretrained(tmp_path / "xm")
    for f in char_tokenizer_dir.iterdir():
        (tmp_path / "xm" / f.name).write_bytes(f.read_bytes())
    assert main(["export", str(tmp_path / "xm"), "--to", "llama", str(tmp_path / "llama")]) == 0
    raw = json.loads((tmp_path / "llama" / "config.json").read_text())
    assert raw["model_type"] == "llama" and "auto_map" not in raw and "scale_emb" not in raw
    assert (tmp_path / "llama" / "tokenizer.json").is_file()
    llama = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    assert type(llama) is LlamaForCausalLM
    ids = torch.randint(3, 211, (2, 40))
    assert (logits(model, ids) - logits(llama, ids)).abs().max() <= 1e-4

    # Llama → Xmodel: the recorded multipliers come back, and so do the original weights.
    assert main(["import", str(tmp_path / "llama"), str(tmp_path / "back")]) == 0
    back = XmodelForCausalLM.from_pretrained(tmp_path / "back").eval()
    for key in ("scale_emb", "scale_depth", "dim_model_base"):
        assert getattr(back.config, key) == getattr(model.config, key)
    assert math.isclose(back.config.rms_norm_eps, model.config.rms_norm_eps, rel_tol=1e-12)
    assert (logits(model, ids) - logits(back, ids)).abs().max() <= 1e-4
    original = model.state_dict()
    for name, tensor in back.state_dict().items():
        assert torch.allclose(tensor, original[name], rtol=1e-6, atol=0), name


def test_saved_folders_carry_checksums_a_changed_weight_file_is_named_and_overwrite_replaces(
        tmp_path, char_tokenizer_dir, capsys):
    from xmodel.model.loading import CHECKSUM_FILE, save_model

    save_model(random_model(seed=4), tmp_path / "xm")
    for f in char_tokenizer_dir.iterdir():
        (tmp_path / "xm" / f.name).write_bytes(f.read_bytes())
    assert main(["export", str(tmp_path / "xm"), "--to", "llama", str(tmp_path / "llama")]) == 0
    assert main(["import", str(tmp_path / "llama"), str(tmp_path / "back")]) == 0
    for folder in ("xm", "llama", "back"):  # every folder Xmodel writes: init/training (save_model), export, import
        sums = json.loads((tmp_path / folder / CHECKSUM_FILE).read_text())
        assert list(sums) == ["model.safetensors"] and len(sums["model.safetensors"]) == 64, folder

    # One flipped byte among the weights: the header still reads, only the checksum can tell.
    weights = tmp_path / "back" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["export", str(tmp_path / "back"), "--to", "llama", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{weights}: checksum mismatch with {CHECKSUM_FILE}" in err[0]
    assert not (tmp_path / "again").exists() and not (tmp_path / "again.partial").exists()

    # An existing export is replaced only with --overwrite, and then completely.
    (tmp_path / "llama" / "stale.txt").write_text("from before")
    assert main(["export", str(tmp_path / "xm"), "--to", "llama", str(tmp_path / "llama")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "xm"), "--to", "llama", str(tmp_path / "llama"), "--overwrite"]) == 0
    assert not (tmp_path / "llama" / "stale.txt").exists() and (tmp_path / "llama" / CHECKSUM_FILE).is_file()


def minicpm_reference(raw_state, cfg_json) -> LlamaForCausalLM:
    """MiniCPM's forward pass written independently: a Llama model with its three multipliers as hooks."""
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg_json["vocab_size"], hidden_size=cfg_json["hidden_size"],
        intermediate_size=cfg_json["intermediate_size"], num_hidden_layers=cfg_json["num_hidden_layers"],
        num_attention_heads=cfg_json["num_attention_heads"], num_key_value_heads=cfg_json["num_key_value_heads"],
        rms_norm_eps=cfg_json["rms_norm_eps"], tie_word_embeddings=cfg_json["tie_word_embeddings"],
        rope_parameters={"rope_type": "default", "rope_theta": cfg_json["rope_theta"]})).eval()
    llama.load_state_dict(raw_state, strict=False)
    if cfg_json["tie_word_embeddings"]:
        llama.tie_weights()
    residual = cfg_json["scale_depth"] / math.sqrt(cfg_json["num_hidden_layers"])
    width = cfg_json["hidden_size"] / cfg_json["dim_model_base"]
    llama.model.embed_tokens.register_forward_hook(lambda m, i, o: o * cfg_json["scale_emb"])
    for layer in llama.model.layers:
        layer.self_attn.o_proj.register_forward_hook(lambda m, i, o: o * residual)
        layer.mlp.down_proj.register_forward_hook(lambda m, i, o: o * residual)
    llama.model.norm.register_forward_hook(lambda m, i, o: o / width)
    return llama


def write_minicpm_checkpoint(path, tied=True, fmt="bin"):
    """Random weights in the MiniCPM / Xmodel-2 trust_remote_code layout (config keys and tensor names)."""
    cfg_json = {
        "architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm",
        "auto_map": {"AutoConfig": "configuration_minicpm.MiniCPMConfig",
                     "AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM"},
        "vocab_size": 211, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "initializer_range": 0.1,
        "scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 16, "tie_word_embeddings": tied,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32", "use_cache": True,
    }
    torch.manual_seed(7)
    d, f, kv = 64, 96, 2 * 16
    state = {"model.embed_tokens.weight": torch.randn(211, d) * 0.3, "model.norm.weight": torch.rand(d) + 0.5}
    for i in range(3):
        p = f"model.layers.{i}."
        shapes = {"self_attn.q_proj": (d, d), "self_attn.k_proj": (kv, d), "self_attn.v_proj": (kv, d),
                  "self_attn.o_proj": (d, d), "mlp.gate_proj": (f, d), "mlp.up_proj": (f, d), "mlp.down_proj": (d, f)}
        state.update({f"{p}{name}.weight": torch.randn(shape) * 0.2 for name, shape in shapes.items()})
        for norm in ("input_layernorm", "post_attention_layernorm"):
            state[f"{p}{norm}.weight"] = torch.rand(d) + 0.5
    if not tied:
        state["lm_head.weight"] = torch.randn(211, d) * 0.3
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg_json))
    if fmt == "bin":
        torch.save(state, path / "pytorch_model.bin")
    else:
        save_file(state, str(path / "model.safetensors"))
    return state, cfg_json


@pytest.mark.parametrize("tied,fmt", [(True, "bin"), (False, "safetensors")])
def test_import_minicpm_layout_then_export_preserves_logits(tmp_path, tied, fmt):
    state, cfg_json = write_minicpm_checkpoint(tmp_path / "minicpm", tied, fmt)
    reference = minicpm_reference(state, cfg_json)
    out, layout, cfg = import_checkpoint(tmp_path / "minicpm", tmp_path / "xm")
    assert layout == "minicpm" and cfg.scale_emb == 12 and cfg.dim_model_base == 16 and cfg.tie_word_embeddings == tied
    ours = XmodelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(3, 211, (2, 30))
    expected = logits(reference, ids)
    assert expected.std() > 0.5
    assert (logits(ours, ids) - expected).abs().max() <= 1e-4
    export_llama(out, tmp_path / "llama")
    llama = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    assert (logits(llama, ids) - expected).abs().max() <= 1e-4


def test_import_plain_llama_is_neutral_or_unfolded(tmp_path):
    torch.manual_seed(5)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
                                         tie_word_embeddings=False)).eval()
    llama.save_pretrained(tmp_path / "llama")
    ids = torch.randint(3, 211, (2, 20))
    expected = logits(llama, ids)
    _, _, neutral = import_checkpoint(tmp_path / "llama", tmp_path / "neutral")
    assert neutral.is_neutral_mup and not neutral.tie_word_embeddings
    assert (logits(XmodelForCausalLM.from_pretrained(tmp_path / "neutral"), ids) - expected).abs().max() <= 1e-5
    # Into μP form: different weights, same function — ready for μP training with these multipliers.
    assert main(["import", str(tmp_path / "llama"), str(tmp_path / "mup"), "--scale-emb", "12",
                 "--scale-depth", "1.4", "--dim-model-base", "16"]) == 0
    mup = XmodelForCausalLM.from_pretrained(tmp_path / "mup").eval()
    assert mup.config.scale_emb == 12 and mup.config.dim_model_base == 16
    assert not torch.allclose(mup.model.norm.weight, llama.model.norm.weight)
    assert (logits(mup, ids) - expected).abs().max() <= 1e-4


def test_import_and_export_refuse_bad_inputs(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
    state, cfg_json = write_minicpm_checkpoint(tmp_path / "rope")
    cfg_json["rope_scaling"] = {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}
    (tmp_path / "rope" / "config.json").write_text(json.dumps(cfg_json))
    assert main(["import", str(tmp_path / "rope"), str(tmp_path / "out")]) == 2
    assert "RoPE scaling 'longrope' is not supported" in capsys.readouterr().err
    state, cfg_json = write_minicpm_checkpoint(tmp_path / "shape")
    cfg_json["intermediate_size"] = 128
    (tmp_path / "shape" / "config.json").write_text(json.dumps(cfg_json))
    assert main(["import", str(tmp_path / "shape"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model.layers.0.mlp.gate_proj.weight has shape [96, 64]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert main(["export", str(tmp_path / "shape"), "--to", "llama", str(tmp_path / "o2")]) == 2
    assert "not an Xmodel checkpoint" in capsys.readouterr().err
