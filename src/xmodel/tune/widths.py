"""One model shape at many widths, under μP or standard parametrisation (SP).

Width changes the hidden size; the head size stays (so the number of heads grows with width, the query/KV
group ratio kept), the MLP keeps its ratio to the hidden size, and the depth stays (or is set).

* μP: the config's scale_emb, scale_depth, dim_model_base and initializer_range, unchanged across widths; the
  width multiplier m = width / dim_model_base then scales init, hidden learning rates and logits (Table 6).
* SP: scale_emb 1, scale_depth null (residual scale 1), dim_model_base null (m = 1: no width-dependent init,
  one learning rate for every tensor, logits not divided), init std `sp_init_std` — a plain Llama/GPT model.
"""

from __future__ import annotations

from typing import Literal

from ..config import Config
from ..errors import XmodelError
from .space import derive

Parametrisation = Literal["mup", "sp"]
PARAMETRISATIONS: tuple[Parametrisation, ...] = ("mup", "sp")
# Variants of μP, as config changes: under a named learning-rate policy ("mup:table6", see xmodel.model.mup;
# plain "mup" keeps the config's), or without the residual branches' scale_depth/√L (depth transfer's control).
MUP_VARIANTS = {**{f"mup:{p}": {"train.mup_lr_policy": p} for p in ("xmodel-2.5", "table6", "standard")},
                "mup:unscaled-depth": {"model.scale_depth": None}}
LABELS = {"mup": "μP", "sp": "SP", **{v: f"μP {v.split(':')[1]}" for v in MUP_VARIANTS}}


def at_width(cfg: Config, width: int, parametrisation: str, *, layers: int | None = None,
             sp_init_std: float = 0.02) -> Config:
    """`cfg` at `width` under "mup", "sp" or "mup:<lr policy>"."""
    if parametrisation in MUP_VARIANTS:
        cfg = derive(cfg, MUP_VARIANTS[parametrisation])
        parametrisation = "mup"
    m = cfg.model
    head_dim = m.head_dim
    if width % head_dim:
        raise XmodelError(f"width {width}: not a multiple of the head size {head_dim} "
                          f"(model.hidden_size / model.num_attention_heads)")
    heads = width // head_dim
    group = max(1, m.num_attention_heads // m.num_key_value_heads)
    kv = max(1, heads // group)
    while heads % kv:
        kv -= 1
    values = {"model.hidden_size": width, "model.num_attention_heads": heads, "model.num_key_value_heads": kv,
              "model.intermediate_size": max(1, round(m.intermediate_size * width / m.hidden_size))}
    if layers is not None:
        values["model.num_hidden_layers"] = layers
    if parametrisation == "sp":
        values.update({"model.scale_emb": 1.0, "model.scale_depth": None, "model.dim_model_base": None,
                       "model.initializer_range": sp_init_std})
    elif m.dim_model_base is None:  # μP needs a fixed base width: the config's own hidden size
        values["model.dim_model_base"] = m.hidden_size
    return derive(cfg, values)
