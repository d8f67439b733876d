"""μP op 4: parameter groups with width-scaled learning rates and weight decay, as named policies; and the μP
multipliers folded into plain weights (`fold_state_dict`, for Llama export and import).

With m = hidden_size / dim_model_base, three readings of who trains at lr/m (`train.mup_lr_policy`):

| policy       | hidden 2-D (attention, MLP) | embedding / untied head    | norm gains              |
|--------------|-----------------------------|----------------------------|-------------------------|
| `xmodel-2.5` | lr/m, decayed               | lr, not decayed            | lr/m, not decayed       |
| `table6`     | lr/m, decayed               | lr/m, decayed              | lr, not decayed         |
| `standard`   | lr/m, decayed               | lr, decayed                | lr, not decayed         |

* `xmodel-2.5` (the default) is what the authors' released Megatron scripts do (Xmodel-2.5: `--lr` for every
  parameter but the embedding and output layer, which get `--decoupled-lr`, the base rate; with
  `--no-decay-norm-bias-embed`): the embedding and an untied output layer at the base lr, everything else —
  norm gains included — at lr/m, and no weight decay on norms, biases and embeddings.
* `table6` reads Xmodel-2's Table 6 literally: every 2-D tensor, the embedding included, at lr/m; other
  parameters at the base lr.
* `standard` is this project's earlier grouping, kept for comparison.

A norm gain's neutral value is 1, not 0, so no policy decays it. Every group carries ``lr_scale`` so a schedule
can set ``group["lr"] = schedule(step) * group["lr_scale"]`` without losing the μP ratio.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_xmodel import XmodelConfig


MUP_LR_POLICIES = ("xmodel-2.5", "table6", "standard")

# policy → group → (lr scaled by 1/m?, weight decayed?)
_POLICY_RULES = {
    "xmodel-2.5": {"hidden_2d": (True, True), "embedding": (False, False), "norms": (True, False)},
    "table6": {"hidden_2d": (True, True), "embedding": (True, True), "norms": (False, False)},
    "standard": {"hidden_2d": (True, True), "embedding": (False, True), "norms": (False, False)},
}


def group_of(name: str, param: nn.Parameter) -> str:
    """hidden_2d (attention and MLP projections), embedding (the embedding and an untied head) or norms (1-D)."""
    if param.ndim < 2:
        return "norms"
    if "embed_tokens" in name or name.startswith("lm_head") or ".lm_head" in name:
        return "embedding"
    return "hidden_2d"


def mup_param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0,
                     policy: str = "xmodel-2.5") -> list[dict]:
    """Optimizer parameter groups of `model` under a μP learning-rate policy (see the module doc)."""
    if policy not in _POLICY_RULES:
        raise ValueError(f"mup_lr_policy: {policy!r} is not one of {', '.join(MUP_LR_POLICIES)}")
    width_mult = model.config.width_mult
    members: dict[str, list] = {"hidden_2d": [], "embedding": [], "norms": []}
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue  # tied weights appear once
        seen.add(id(param))
        members[group_of(name, param)].append(param)
    groups = []
    for group, (scaled, decayed) in _POLICY_RULES[policy].items():
        if members[group]:
            scale = 1.0 / width_mult if scaled else 1.0
            groups.append({"name": group, "params": members[group], "lr_scale": scale, "lr": lr * scale,
                           "weight_decay": weight_decay if decayed else 0.0})
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
