"""One optimizer step and the held-out loss, with no host synchronisation inside.

The step's loss is the mean token loss over the whole global batch: each micro-batch's summed token loss is
divided by the global number of target tokens per rank, so after the data-parallel gradient average the
gradient is that of the global mean. A step whose loss or gradient is not finite is skipped on the device by
the fused AdamW kernel (`found_inf`, as `torch.amp.GradScaler` uses it), so nothing here waits for the device
(with Muon, which has no device-side skip, the flag is read once per step); the loop reads the step's figures
only on the steps it logs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data.batches import BatchSource, count_targets
from .build import Built, amp_context
from .distributed import all_reduce_sum, set_grad_sync
from .optimizers import step_all


def forward_backward(step_model, model, micro_batches: list[dict], items_per_rank, device, amp_dtype,
                     chunked_loss: bool = True) -> torch.Tensor:
    """Accumulate gradients over this rank's micro-batches, each divided by `items_per_rank` (a number or a
    0-d tensor: global target tokens / world size). Returns the local summed token loss (a device tensor)."""
    loss_sum = torch.zeros((), device=device)
    last = len(micro_batches) - 1
    for j, b in enumerate(micro_batches):
        ids = b["input_ids"].to(device, non_blocking=True)
        labels = b["labels"].to(device, non_blocking=True)
        with set_grad_sync(model, j == last), amp_context(device, amp_dtype):
            out = step_model(input_ids=ids, labels=labels, return_logits=not chunked_loss,
                             num_items_in_batch=items_per_rank)
            out.loss.backward()
        loss_sum += out.loss.detach() * items_per_rank
    return loss_sum


@dataclass
class StepResult:
    """A step's figures, left on the device until someone reads them."""

    loss_sum: torch.Tensor    # summed token loss over all ranks
    targets: torch.Tensor     # target tokens over all ranks
    grad_norm: torch.Tensor   # before clipping
    skipped: torch.Tensor     # 1.0 when the update was skipped (non-finite loss or gradient), else 0.0

    @property
    def loss(self) -> torch.Tensor:
        return self.loss_sum / self.targets


def train_step(built: Built, micro_batches: list[dict], local_targets: int, grad_clip: float,
               chunked_loss: bool = True) -> StepResult:
    """Forward, backward, clip and update on this rank's micro-batches of one global batch."""
    device, world = built.device, built.env.world_size
    targets = all_reduce_sum(torch.tensor(float(local_targets), device=device))
    loss_sum = forward_backward(built.step_model, built.model, micro_batches, targets / world, device,
                                built.amp_dtype, chunked_loss=chunked_loss)
    loss_sum = all_reduce_sum(loss_sum)
    grad_norm = torch.nn.utils.clip_grad_norm_(built.model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
        grad_norm = grad_norm.full_tensor()
    found_inf = (~(torch.isfinite(loss_sum) & torch.isfinite(grad_norm))).float()
    step_all(built.optimizers, found_inf)
    return StepResult(loss_sum=loss_sum, targets=targets, grad_norm=grad_norm.detach(), skipped=found_inf)


def evaluate_loss(model, source: BatchSource, count: int, micro_batch: int, device, amp_dtype) -> float:
    """Mean token loss over the first `count` sequences of `source` (a held-out set)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    with torch.no_grad():
        for start in range(0, count, micro_batch):
            batch = source.batch(start, min(micro_batch, count - start))
            n = count_targets(batch["labels"])
            with amp_context(device, amp_dtype):
                loss = model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device),
                             return_logits=False, num_items_in_batch=n).loss
            total += loss.double() * n
            tokens += n
    model.train(was_training)
    return float(total / max(tokens, 1))
