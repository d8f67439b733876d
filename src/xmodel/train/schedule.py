"""Learning-rate schedules as pure functions of the optimizer step.

Warmup-Stable-Decay (MiniCPM, Xmodel-2): linear warmup to ``max_lr`` over ``warmup_steps``, constant until the
decay start S, then exponential decay with half-life T:

    lr(s) = max_lr · 0.5^((s − S) / T)        for s ≥ S,   floored at ``min_lr``

T is a half-life (5000 steps in the Xmodel-2 report): the rate halves every T steps and never reaches zero by
itself — unlike Megatron's "exponential" WSD style, which goes to zero at the end of a fixed window. Cosine and
linear decays (from the end of warmup to ``total_steps``, down to ``min_lr``) are here for comparison.

Because the schedule depends only on the step, a decay branch started from a stable checkpoint at step N
sees exactly the stable run's rates up to N (the branch sets S = N unless told otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass
class ScheduleConfig:
    kind: Literal["wsd", "cosine", "linear", "constant"] = "wsd"
    max_lr: float = 0.01
    min_lr: float = 0.0
    warmup_steps: int = 0
    decay_start: int | None = None   # WSD: S; None = never (the stable stage); a decay branch sets it
    half_life: float = 5000.0        # WSD: T, in steps
    total_steps: int | None = None   # cosine/linear: where the decay ends

    def validate(self):
        if not self.max_lr > 0:
            raise ValueError(f"max_lr: must be > 0, got {self.max_lr}")
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"min_lr: must be in [0, max_lr], got {self.min_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be ≥ 0, got {self.warmup_steps}")
        if not self.half_life > 0:
            raise ValueError(f"half_life: must be > 0, got {self.half_life}")
        if self.decay_start is not None and self.decay_start < self.warmup_steps:
            raise ValueError(f"decay_start: {self.decay_start} is before the end of warmup ({self.warmup_steps})")
        if self.kind in ("cosine", "linear") and (self.total_steps or 0) <= self.warmup_steps:
            raise ValueError(f"total_steps: {self.kind} needs total_steps > warmup_steps")


def lr_at(step: int, cfg: ScheduleConfig) -> float:
    """Learning rate of optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    if cfg.kind == "constant":
        return cfg.max_lr
    if cfg.kind == "wsd":
        if cfg.decay_start is None or step < cfg.decay_start:
            return cfg.max_lr
        return max(cfg.min_lr, cfg.max_lr * 0.5 ** ((step - cfg.decay_start) / cfg.half_life))
    span = cfg.total_steps - cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.kind == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        factor = 1 - progress
    return cfg.min_lr + (cfg.max_lr - cfg.min_lr) * factor
