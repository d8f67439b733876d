"""Process-group setup and model wrapping on PyTorch's own engines: DDP and FSDP2 (`fully_shard`).

Launch with `torchrun` (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); without it everything runs
in one process on the same code path. NCCL on GPUs, gloo on CPUs.

FSDP2 in bf16 on CUDA all-gathers the decoder layers' weights in bf16 and reduce-scatters their gradients in
fp32 (`MixedPrecisionPolicy`), half the traffic of fp32 all-gathers that autocast would round to bf16 anyway.
The layers keep the dtype of their inputs (``cast_forward_inputs=False``) and the root unit (embedding, tied
head, final norm) keeps fp32 weights, so the residual stream stays fp32 as under plain autocast: the only
numerical difference from autocast is that the norm gains are rounded to bf16. Optimizer state, sharded
weights and checkpoints stay fp32. On CPU (gloo), or without bf16, nothing changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistEnv:
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def fsdp_mixed_precision(env: DistEnv, amp_dtype: torch.dtype | None):
    """The decoder layers' FSDP2 policy: bf16 all-gathers and fp32 gradient reduction when training in bf16 on
    CUDA; None (fp32 throughout, the CPU/gloo numerics) otherwise."""
    if env.device.type != "cuda" or amp_dtype != torch.bfloat16:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)


def wrap_model(model: nn.Module, mode: str, env: DistEnv, amp_dtype: torch.dtype | None = None) -> nn.Module:
    """'none' → the model; 'ddp' → DistributedDataParallel; 'fsdp' → FSDP2, one unit per decoder layer.

    `amp_dtype` is the training autocast dtype (None: fp32); bf16 on CUDA gives FSDP2's layers the mixed-precision
    policy of `fsdp_mixed_precision`."""
    if mode == "none" or env.world_size == 1 and mode != "fsdp":
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        policy = fsdp_mixed_precision(env, amp_dtype)
        for layer in model.model.layers:
            if policy is None:
                fully_shard(layer)
            else:
                fully_shard(layer, mp_policy=policy)
        fully_shard(model)  # the root unit holds the (tied) embedding, final norm and head; fp32 all-gathers
        return model
    raise ValueError(f"parallel: unknown mode {mode!r}")


def set_grad_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce on accumulation micro-steps (DDP: no_sync; FSDP2: requires_gradient_sync)."""
    import contextlib

    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if hasattr(model, "no_sync") and not enabled:
        return model.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
