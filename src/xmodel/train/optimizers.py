"""The optimizers of a run: AdamW with μP groups, or Muon for the hidden matrices and AdamW for the rest.

    optimizers = build_optimizers(model, train_cfg, device)     # a list, stepped together every step

`train.optimizer: adamw` — one fused AdamW over `mup_param_groups` (hidden 2-D weights at lr/m, m =
hidden_size / dim_model_base; the embedding, head and norm gains as `train.mup_lr_policy` says).

`train.optimizer: muon` — PyTorch's `torch.optim.Muon` (Newton–Schulz orthogonalised momentum) for the hidden 2-D
weights (attention and MLP projections; lr/m under every policy), AdamW as above for the embedding, the head
and the norm gains. Muon's
update is scaled so that AdamW's learning rate and weight decay carry over, and so that it transfers across
width the way μP does:

* at the μP base width, Moonlight's rule (Liu et al. 2025, "Muon is Scalable for LLM Training", §2.2): the
  orthogonalised update is multiplied by 0.2·√max(fan_in, fan_out), which gives it AdamW's typical update RMS
  (torch's ``adjust_lr_fn="match_rms_adamw"``);
* across widths, the group's learning rate is lr/√m: with fan-in and fan-out both growing by m, the update's
  spectral norm, lr·0.2·√max(fan_in, fan_out)/√m, then stays that of the base width — the spectral condition
  for feature learning (Yang, Simon & Bernstein 2023, "A Spectral Condition for Feature Learning") that μP's
  lr/m does for Adam. With neutral μP (m = 1) this is exactly Moonlight's rule.

Weight decay is decoupled in both (θ ← θ − lr·λ·θ with the group's lr).
"""

from __future__ import annotations

import math

import torch

from ..model import mup_param_groups
from .config import TrainConfig

MUON_RULE = "match_rms_adamw"  # torch.optim.Muon's name for Moonlight's 0.2·√max(A, B)


def build_optimizers(module, train: TrainConfig, device: torch.device) -> list[torch.optim.Optimizer]:
    """The optimizers of `module` (the transformers model itself; under FSDP2 its parameters are the shards)."""
    groups = mup_param_groups(module, lr=train.schedule.max_lr, weight_decay=train.weight_decay,
                              policy=train.mup_lr_policy)
    muon_groups = [g for g in groups if g["name"] == "hidden_2d"] if train.optimizer == "muon" else []
    adamw_groups = [g for g in groups if g not in muon_groups]
    optimizers: list[torch.optim.Optimizer] = []
    if muon_groups:
        scale = 1.0 / math.sqrt(module.config.width_mult)
        for g in muon_groups:
            g["lr_scale"] = scale
            g["lr"] = train.schedule.max_lr * scale
        optimizers.append(torch.optim.Muon(muon_groups, lr=train.schedule.max_lr * scale,
                                           weight_decay=train.weight_decay, momentum=train.muon_momentum,
                                           nesterov=True, ns_steps=train.muon_ns_steps, adjust_lr_fn=MUON_RULE))
    if adamw_groups:
        # PyTorch's fused kernel does the whole update in one pass per tensor; on CPU it measured 5.3x faster
        # than foreach (0.079 s vs 0.419 s per step for tiny's 88M parameters). It also skips a step on the
        # device when told the gradients are not finite (`found_inf`), without a host sync.
        kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
        optimizers.append(torch.optim.AdamW(adamw_groups, lr=train.schedule.max_lr,
                                            betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_eps,
                                            **kwargs))
    return optimizers


def param_groups(optimizers: list[torch.optim.Optimizer]):
    for optimizer in optimizers:
        yield from optimizer.param_groups


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer.step` honours `found_inf` (PyTorch's fused Adam/AdamW kernels; not Muon)."""
    return bool(optimizer.defaults.get("fused"))


def step_all(optimizers: list[torch.optim.Optimizer], found_inf: torch.Tensor) -> None:
    """Step every optimizer unless `found_inf` (a 0-d float tensor) is set. Fused AdamW skips on the device; an
    optimizer without that (Muon) costs one host read of the flag, once per step for all of them."""
    skip = None
    for optimizer in optimizers:
        if skips_on_device(optimizer):
            optimizer.found_inf = found_inf
            optimizer.step()
            del optimizer.found_inf  # a later step() outside the loop must not see this step's flag
            continue
        if skip is None:
            skip = bool(found_inf.item())
        if not skip:
            optimizer.step()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
