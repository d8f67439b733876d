"""μP op 4: AdamW parameter groups with width-scaled learning rates; and the μP multipliers folded into plain
weights (`fold_state_dict`, for Llama export and import).

Following Xmodel-2 Table 6 and the family's training code:

* hidden 2-D weights (attention and MLP projections) train at ``lr / m`` with m = hidden_size / dim_model_base;
* the (tied) embedding and an untied LM head train at the base ``lr`` — they are the "other parts" of Table 6
  and the MiniCPM-family releases keep them at the base rate;
* 1-D parameters (RMSNorm gains) also train at the base ``lr`` and get no weight decay: a gain of 1 is their
  neutral value, and decaying it towards 0 would shrink the normalised activations.

Weight decay applies to all 2-D weights (embedding included). Every group carries ``lr_scale`` so a schedule
can set ``group["lr"] = schedule(step) * group["lr_scale"]`` without losing the μP ratio.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_xmodel import XmodelConfig


def mup_param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict]:
    config = model.config
    width_mult = config.width_mult
    hidden, base_2d, one_d = [], [], []
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue  # tied weights appear once
        seen.add(id(param))
        if param.ndim < 2:
            one_d.append(param)
        elif "embed_tokens" in name or name.startswith("lm_head") or ".lm_head" in name:
            base_2d.append(param)
        else:
            hidden.append(param)
    groups = [
        {"name": "hidden_2d", "params": hidden, "lr_scale": 1.0 / width_mult, "weight_decay": weight_decay},
        {"name": "embedding", "params": base_2d, "lr_scale": 1.0, "weight_decay": weight_decay},
        {"name": "norms", "params": one_d, "lr_scale": 1.0, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return groups


def mup_weight_factors(cfg: XmodelConfig) -> dict[str, float]:
    """Weight-name suffix → the factor that folds the μP multipliers of `cfg` into that weight (the fold is explained in `xmodel.export.llama`)."""
    branch = cfg.residual_scale / cfg.scale_emb
    return {"self_attn.o_proj.weight": branch, "mlp.down_proj.weight": branch,
            "model.norm.weight": 1.0 / cfg.width_mult}


@torch.no_grad()
def fold_state_dict(state: dict[str, torch.Tensor], cfg: XmodelConfig,
                    inverse: bool = False) -> dict[str, torch.Tensor]:
    """Xmodel weights → Llama weights with `cfg`'s μP multipliers folded in (new tensors; `state` is untouched).

    `inverse=True` undoes the fold: Llama weights → the Xmodel weights of `cfg` computing the same logits
    (how `xmodel import` gives a Llama checkpoint μP multipliers). Scaling is done in float64 and cast back,
    so it adds no rounding beyond the final cast.
    """
    factors = mup_weight_factors(cfg)
    out = {}
    for name, tensor in state.items():
        if "rotary_emb" in name:
            continue
        factor = next((f for suffix, f in factors.items() if name.endswith(suffix)), 1.0)
        if inverse:
            factor = 1.0 / factor
        out[name] = tensor.clone() if factor == 1.0 else (tensor.double() * factor).to(tensor.dtype)
    if cfg.tie_word_embeddings:
        out.pop("lm_head.weight", None)  # tied: saved once, as the embedding
    return out
