"""The next step's micro-batches, read in a background thread while the current step computes.

Each step reads this rank's micro-batches of the global batch [position, position + sequences): micro-batch j
of rank r starts at position + (j·world_size + r)·micro_batch, so the data order does not depend on how the
batch is split across ranks and accumulation steps. On CUDA the tensors are pinned, so the copy to the device
does not block.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ..data.batches import BatchSource, count_targets
from .batching import BatchPlan


@dataclass
class StepBatch:
    micro_batches: list[dict]
    sequences: int          # the global batch, all ranks
    local_targets: int      # tokens with a loss in this rank's micro-batches


def read_step_batch(data: BatchSource, plan: BatchPlan, step: int, position: int, rank: int,
                    pin: bool = False) -> StepBatch:
    sequences = plan.sequences_at(step)
    micro = [data.batch(position + (j * plan.world_size + rank) * plan.micro_batch, plan.micro_batch)
             for j in range(sequences // plan.unit)]
    if pin:
        micro = [{k: v.pin_memory() for k, v in b.items()} for b in micro]
    return StepBatch(micro, sequences, sum(count_targets(b["labels"]) for b in micro))


class Prefetcher:
    def __init__(self, data: BatchSource, plan: BatchPlan, rank: int, pin: bool):
        self.data, self.plan, self.rank, self.pin = data, plan, rank, pin
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xmodel-batches")
        self.pending: Future | None = None

    def request(self, step: int, position: int) -> None:
        self.pending = self.pool.submit(read_step_batch, self.data, self.plan, step, position, self.rank, self.pin)

    def take(self) -> StepBatch:
        batch, self.pending = self.pending.result(), None
        return batch

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def pin_batches(device: torch.device) -> bool:
    return device.type == "cuda"
