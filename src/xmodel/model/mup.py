"""μP op 4: AdamW parameter groups with width-scaled learning rates.

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

from torch import nn


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
