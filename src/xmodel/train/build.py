"""Everything the loop trains, built once before it starts: the model on its device, wrapped for data
parallelism, compiled if asked, and its optimizers (`optimizers`: AdamW, or Muon + AdamW, with μP groups).

    built = build(model_cfg, train_cfg, env)
    built.model        # what the optimizer and checkpoints see (DDP / FSDP2 wrapper, or the model)
    built.module       # the transformers model inside it (save_pretrained, generate)
    built.step_model   # what forward passes call (torch.compile of `model`, or `model`)
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..model import XmodelConfig, XmodelForCausalLM
from ..model.precision import Precision, choose_precision, probe_shape
from .config import TrainConfig
from .distributed import DistEnv, wrap_model
from .optimizers import build_optimizers


def run_precision(train: TrainConfig, model_cfg: XmodelConfig, env: DistEnv) -> Precision:
    """The run's precision (`train.precision`; on a CPU, "auto" is bf16 only where a product of the model's own
    MLP shape measured faster in it). Every rank computes in the same one: on several ranks bf16 needs all of
    them to have chosen it."""
    tokens = train.micro_batch_size * 256
    choice = choose_precision(train.precision, env.device,
                              probe_shape(model_cfg.hidden_size, model_cfg.intermediate_size, tokens))
    if env.world_size > 1 and dist.is_initialized():
        agreed = torch.tensor([choice.name == "bf16"], dtype=torch.int32, device=env.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        if choice.name == "bf16" and not agreed.item():
            choice = dataclasses.replace(choice, name="fp32", reason=choice.reason + "; fp32 on another rank")
    return choice


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


@dataclass
class Built:
    model: torch.nn.Module
    module: XmodelForCausalLM
    step_model: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]  # stepped together (Muon for hidden matrices + AdamW, or AdamW)
    env: DistEnv
    parallel: str                       # none / ddp / fsdp, as applied
    precision: Precision                # what the passes compute in, and why (logged, in config.json)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.precision.autocast_dtype

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
    precision = run_precision(train, model_cfg, env)
    # FSDP2 in bf16 on CUDA: bf16 all-gathers (distributed)
    model = wrap_model(module, parallel, env, precision.autocast_dtype)
    optimizers = build_optimizers(module, train, env.device)
    step_model = torch.compile(model) if train.compile else model
    return Built(model=model, module=module, step_model=step_model, optimizers=optimizers, env=env,
                 parallel=parallel, precision=precision)
