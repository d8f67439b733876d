"""Everything the loop trains, built once before it starts: the model on its device, wrapped for data
parallelism, compiled if asked, and AdamW with μP learning-rate groups.

    built = build(model_cfg, train_cfg, env)
    built.model        # what the optimizer and checkpoints see (DDP / FSDP2 wrapper, or the model)
    built.module       # the transformers model inside it (save_pretrained, generate)
    built.step_model   # what forward passes call (torch.compile of `model`, or `model`)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..model import XmodelConfig, XmodelForCausalLM, mup_param_groups
from .config import TrainConfig
from .distributed import DistEnv, wrap_model


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cpu" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def amp_context(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def unwrap(model):
    """The underlying transformers model of a DDP / compiled wrapper (FSDP2 modifies the module in place)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def build_optimizer(model, train: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    groups = mup_param_groups(unwrap(model), lr=train.schedule.max_lr, weight_decay=train.weight_decay)
    # PyTorch's fused kernel does the whole update in one pass per tensor; on CPU it measured 5.3x faster than
    # foreach (0.079 s vs 0.419 s per step for tiny's 88M parameters), which on CPU loops over the tensors. It
    # also skips a step on the device when told the gradients are not finite (`found_inf`), without a host sync.
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=train.schedule.max_lr, betas=(train.adam_beta1, train.adam_beta2),
                             eps=train.adam_eps, **kwargs)


@dataclass
class Built:
    model: torch.nn.Module
    module: XmodelForCausalLM
    step_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    env: DistEnv
    parallel: str                       # none / ddp / fsdp, as applied
    amp_dtype: torch.dtype | None

    @property
    def device(self) -> torch.device:
        return self.env.device


def build(model_cfg: XmodelConfig, train: TrainConfig, env: DistEnv) -> Built:
    """A freshly initialised model (seeded by `train.seed`) and its optimizer; `start` then loads any weights."""
    torch.manual_seed(train.seed)
    module = XmodelForCausalLM(model_cfg).to(env.device)
    if train.activation_checkpointing:
        module.gradient_checkpointing_enable()
    parallel = train.parallel if train.parallel != "auto" else ("ddp" if env.world_size > 1 else "none")
    model = wrap_model(module, parallel, env)
    optimizer = build_optimizer(model, train, env.device)
    step_model = torch.compile(model) if train.compile else model
    return Built(model=model, module=module, step_model=step_model, optimizer=optimizer, env=env,
                 parallel=parallel, amp_dtype=autocast_dtype(train.precision, env.device))
