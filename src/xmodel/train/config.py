"""The `train` section of the project config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .schedule import ScheduleConfig


@dataclass
class TrainConfig:
    """Optimizer, schedule, batch, precision, parallelism and bookkeeping of one training run.

    μP scales each group's learning rate and chooses its weight decay by `mup_lr_policy` (see
    `xmodel.model.mup`). Batch sizes are global (all ranks, all accumulation
    micro-steps) and counted in tokens.
    """

    seed: int = 0
    max_steps: int = 1000                    # optimizer steps (a decay branch: steps after its start)
    micro_batch_size: int = 8                # sequences per forward/backward on one rank
    batch_tokens: int = 32768                # global batch after the ramp
    batch_tokens_start: int | None = None    # ramp start (None = no ramp)
    batch_ramp_steps: int = 0
    batch_ramp: Literal["linear", "step"] = "linear"  # step: batch_tokens_start until batch_ramp_steps, then all
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: Literal["adamw", "muon"] = "adamw"  # muon: Muon for hidden matrices, AdamW for the rest
    mup_lr_policy: Literal["xmodel-2.5", "table6", "standard"] = "xmodel-2.5"  # see xmodel.model.mup
    muon_momentum: float = 0.95
    muon_ns_steps: int = 5                   # Newton–Schulz iterations per Muon step
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0                   # 0 = off
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 autocast where the device supports it
    compile: bool = False
    activation_checkpointing: bool = False
    loss: Literal["chunked", "standard"] = "chunked"  # chunked: cross-entropy without materialising all logits
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: ddp when launched on several ranks
    device: str = "auto"
    log_every: int = 10
    eval_every: int = 100                    # held-out loss every N steps (0 = only at the end)
    eval_sequences: int = 64
    save_every: int = 200
    keep_last: int = 2
    keep_every: int = 0                      # also keep every K-th step's checkpoint (for decay branches)
    sample_prompts: list[str] = field(default_factory=lambda: ["The meaning of life is", "def fibonacci(n):",
                                                                "中国的首都是"])
    sample_tokens: int = 32
    max_bad_steps: int = 5                   # consecutive NaN/inf steps before stopping
    peak_flops: float | None = None          # per device, for MFU; None = look up (GPU) or measure (CPU)
    init_from: str | None = None             # a model folder whose weights the run starts from (--init-from)

    def validate(self):
        for name in ("max_steps", "micro_batch_size", "batch_tokens", "log_every", "max_bad_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.batch_tokens_start is not None and not 0 < self.batch_tokens_start <= self.batch_tokens:
            raise ValueError(f"batch_tokens_start: must be in (0, batch_tokens], got {self.batch_tokens_start}")
        if not 0 <= self.adam_beta1 < 1 or not 0 <= self.adam_beta2 < 1:
            raise ValueError("adam_beta1: betas must be in [0, 1)")
        if not 0 <= self.muon_momentum < 1:
            raise ValueError(f"muon_momentum: must be in [0, 1), got {self.muon_momentum}")
        if not 1 <= self.muon_ns_steps < 100:
            raise ValueError(f"muon_ns_steps: must be in [1, 100), got {self.muon_ns_steps}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay: weight_decay and grad_clip must be ≥ 0")
