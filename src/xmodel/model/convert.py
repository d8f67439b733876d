"""Hugging Face checkpoints of other layouts as Xmodel models, in memory (what `xmodel import` writes out and
`xmodel train --init-from` starts from).

Two source layouts, both with Llama's tensor names (``model.layers.N.self_attn.q_proj.weight`` …):

* **MiniCPM / Xmodel-2** (``trust_remote_code`` checkpoints: ``model_type`` "minicpm", or an ``auto_map`` to the
  authors' own classes): config keys ``scale_emb``, ``scale_depth`` and ``dim_model_base`` carry the μP
  multipliers with exactly our meaning (embedding × scale_emb, block outputs × scale_depth/√L, final hidden
  state ÷ hidden_size/dim_model_base), so weights are copied unchanged.
* **Llama** (``LlamaForCausalLM``, or Xmodel-LM's release which is Llama without μP): imported with neutral
  multipliers, which is exactly the Llama model. Given μP values (``mup=``), the weights are *unfolded* — the
  inverse of `mup.fold_state_dict` — into the Xmodel parameterisation with those multipliers, computing the
  same logits; a checkpoint written by ``xmodel export --to llama`` records its values, so the round trip
  Xmodel → Llama → Xmodel restores the original multipliers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import XmodelError
from .configuration_xmodel import XmodelConfig
from .loading import checkpoint_shapes, read_model_config, weight_files
from .mup import fold_state_dict

EXPORT_NOTE = "xmodel_export.json"  # what `xmodel export --to llama` records beside the weights


def read_config(src: Path) -> dict:
    """The source's config.json (`read_model_config`: a one-line error naming the file and what is wrong)."""
    return read_model_config(src)


MUP_KEYS = ("scale_emb", "scale_depth", "dim_model_base")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def read_config(src: Path) -> dict:
    """The source's config.json (`read_model_config`: a one-line error naming the file and what is wrong)."""
    return read_model_config(src)


def detect_layout(cfg: dict, src: Path) -> str:
    """'minicpm' or 'llama'; anything else is refused with the reason."""
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type == "xmodel" and "auto_map" not in cfg and "scale_emb" in cfg:
        raise XmodelError(f"{src}: already an Xmodel checkpoint (nothing to import)")
    if model_type == "minicpm" or any(k in cfg for k in MUP_KEYS):
        return "minicpm"
    if model_type in ("llama", "xmodel") or any(a in ("LlamaForCausalLM", "XModelForCausalLM") for a in archs):
        return "llama"
    raise XmodelError(f"{src}: model_type {model_type!r} / architectures {archs} is neither a MiniCPM/Xmodel-2 "
                      "nor a Llama layout")


def _rope_theta(cfg: dict) -> float:
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling")
    for spec in (rope, scaling or {}):
        kind = spec.get("rope_type", spec.get("type", "default"))
        if kind not in ("default", None):
            raise XmodelError(f"config.json: RoPE scaling {kind!r} is not supported (only plain RoPE)")
    return float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _first_id(value):
    return value[0] if isinstance(value, list) and value else value


def xmodel_config_from(cfg: dict, layout: str, tied: bool, mup: dict | None = None) -> XmodelConfig:
    """The XmodelConfig of a source config (keys of MiniCPM / Llama), refusing what the model cannot express."""
    if cfg.get("hidden_act", "silu") != "silu":
        raise XmodelError(f"config.json: hidden_act {cfg['hidden_act']!r} is not supported (SwiGLU/silu only)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise XmodelError(f"config.json: {key}=true is not supported (the model has no biases)")
    heads = cfg["num_attention_heads"]
    if cfg.get("head_dim") not in (None, cfg["hidden_size"] // heads):
        raise XmodelError(f"config.json: head_dim {cfg['head_dim']} differs from hidden_size/num_attention_heads")
    values = dict(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        max_position_embeddings=cfg.get("max_position_embeddings", 4096), rope_theta=_rope_theta(cfg),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), initializer_range=float(cfg.get("initializer_range", 0.02)),
        tie_word_embeddings=tied, bos_token_id=_first_id(cfg.get("bos_token_id")),
        eos_token_id=_first_id(cfg.get("eos_token_id")), pad_token_id=_first_id(cfg.get("pad_token_id")),
        scale_emb=1.0, scale_depth=None, dim_model_base=None)
    if layout == "minicpm":
        values.update(scale_emb=float(cfg.get("scale_emb", 1.0)), scale_depth=cfg.get("scale_depth"),
                      dim_model_base=cfg.get("dim_model_base"))
        if values["scale_depth"] is not None:
            values["scale_depth"] = float(values["scale_depth"])
    elif mup:
        values.update(mup)
    try:
        out = XmodelConfig(**values)
        out.validate_architecture()
    except (TypeError, ValueError) as e:
        raise XmodelError(f"config.json: {str(e.__cause__ or e).splitlines()[0]}") from None
    if layout == "llama" and mup:
        # The unfolded model's norms must see ε·scale_emb² to equal Llama's ε on a stream scale_emb× larger.
        out.rms_norm_eps = out.rms_norm_eps * out.scale_emb ** 2
    return out


def read_weights(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint: model.safetensors, pytorch_model.bin, or their sharded indexes."""
    from safetensors.torch import load_file

    files = [name for name in weight_files(src) if not name.endswith(".index.json")]
    if not files:
        raise XmodelError(f"{src}: no weights (model.safetensors or pytorch_model.bin, possibly sharded)")
    missing = [name for name in files if not (src / name).is_file()]
    if missing:
        raise XmodelError(f"{src}: shard {missing[0]} listed in the shard index is missing")
    checkpoint_shapes(src)  # reads every safetensors header first: a truncated or corrupt file is named
    state = {}
    for name in files:
        state.update(load_file(str(src / name)) if name.endswith(".safetensors") else _load_bin(str(src / name)))
    return state


def _load_bin(path: str) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle that is not a plain state dict, or a truncated file
        raise XmodelError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def mup_from_export_note(src: Path) -> dict | None:
    """The μP values recorded by `xmodel export --to llama`, if this Llama checkpoint came from there."""
    note = src / EXPORT_NOTE
    if not note.is_file():
        return None
    return json.loads(note.read_text()).get("mup_config")


def convert_checkpoint(src: str | Path, mup: dict | None = None, dtype: str | torch.dtype | None = None):
    """Load `src` (MiniCPM/Xmodel-2 or Llama layout) as an `XmodelForCausalLM` in memory: (model, layout).

    `mup` gives a Llama source μP multipliers (scale_emb, scale_depth, dim_model_base); by default those
    recorded by our own Llama export, else none.
    """
    from .modeling_xmodel import XmodelForCausalLM

    src = Path(src)
    if not src.is_dir():
        raise XmodelError(f"{src}: no such checkpoint directory")
    raw = read_config(src)
    layout = detect_layout(raw, src)
    if layout == "minicpm" and mup:
        raise XmodelError("--scale-emb/--scale-depth/--dim-model-base apply to Llama sources only "
                          "(a MiniCPM/Xmodel-2 checkpoint carries its own)")
    if layout == "llama" and mup is None:
        mup = mup_from_export_note(src)
    state = {k: v for k, v in read_weights(src).items() if "rotary_emb" not in k}
    tied = bool(raw.get("tie_word_embeddings", "lm_head.weight" not in state))
    cfg = xmodel_config_from(raw, layout, tied, mup)
    if layout == "llama" and mup:
        state = fold_state_dict(state, cfg, inverse=True)
    if tied:
        state.pop("lm_head.weight", None)
    source_dtype = next(iter(state.values())).dtype
    target_dtype = DTYPES.get(dtype, dtype) if dtype else source_dtype  # a name or a torch dtype
    with torch.device("meta"):
        model = XmodelForCausalLM(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    for name, shape in expected.items():
        if name not in state:
            raise XmodelError(f"{src}: tensor {name} is missing")
        if tuple(state[name].shape) != shape:
            raise XmodelError(f"{src}: tensor {name} has shape {list(state[name].shape)}, config.json implies "
                              f"{list(shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise XmodelError(f"{src}: unexpected tensor {extra[0]} ({len(extra)} not in the {layout} layout)")
    model.load_state_dict({k: v.to(target_dtype) for k, v in state.items()}, strict=False, assign=True)
    if tied:
        model.tie_weights()
    model.model.rotary_emb.inv_freq = type(model.model.rotary_emb).compute_inv_freq(cfg)
    return model.eval(), layout


def as_xmodel(mup: dict | None = None):
    """A `load_model_dir` converter: a Llama / MiniCPM folder as an `XmodelForCausalLM` (`convert_checkpoint`)."""
    return lambda src, dtype: convert_checkpoint(src, mup, dtype)[0]
