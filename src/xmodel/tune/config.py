"""The `tune` section of the project config: how the wind tunnel searches and how big each run is.

    tune:
      study: {sampler: gp, n_trials: 300, pruner: median}
      mup: {tokens: 16777216, evals: 4}
      coord: {widths: [64, 128, 256, 512, 1024], steps: 4}
      transfer: {widths: [64, 128, 256, 512], tokens: 1048576}
      mixture: {stable_tokens: 8388608, decay_tokens: 2097152}

A trial's model and training settings (batch, sequence length, precision, schedule shape) come from the
`model` and `train` sections as for any run; the wind tunnel only sets what it searches (the μP values and the
learning rate, or the decay mixture) and the step count that its token budget implies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..data.config import SFT_CATEGORIES  # math, code, logic, knowledge, commonsense (Xmodel-2 §2.3)


@dataclass
class StudyConfig:
    """How Optuna searches (shared by `tune mup` and `tune mixture`).

    n_trials counts finished trials (complete or pruned) of the whole study, over every worker and restart:
    rerunning the same command after a crash continues towards it. A worker whose heart has not beaten for
    `grace_period` seconds (killed, machine lost) has its trial marked failed and queued again with the same
    parameters, up to `max_retries` times.
    """

    sampler: Literal["gp", "tpe"] = "gp"
    n_trials: int = 300
    startup_trials: int = 10          # random trials before the model-based sampler takes over
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_warmup_evals: int = 1      # evaluations every trial gets before it may be pruned
    seed: int = 0                     # sampler seed; worker k uses seed + k
    max_failures: int = 5             # a worker stops after this many failed trials in a row
    heartbeat_interval: int = 30      # seconds
    grace_period: int = 120           # seconds without a heartbeat before a running trial counts as crashed
    max_retries: int = 2

    def validate(self):
        for name in ("n_trials", "max_failures", "heartbeat_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.startup_trials < 0 or self.pruner_warmup_evals < 0 or self.max_retries < 0:
            raise ValueError("startup_trials: startup_trials, pruner_warmup_evals and max_retries must be ≥ 0")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period: must exceed heartbeat_interval ({self.heartbeat_interval}), "
                             f"got {self.grace_period}")


def _check_choices(name: str, values: list[str], allowed: tuple[str, ...]) -> None:
    if not values or len(set(values)) != len(values) or any(v not in allowed for v in values):
        raise ValueError(f"{name}: a list of distinct names from {', '.join(allowed)}, got {values}")


@dataclass
class MupSearchConfig:
    """One μP trial: the nano model trained on `tokens` tokens, held-out loss measured `evals` times (the points
    where a hopeless trial may be pruned; the last one is the objective). Warmup is `warmup_fraction` of the
    trial's steps; the rest of the schedule is `train.schedule` (by default constant after warmup). With more
    than one of `optimizers` (or `lr_policies`, see `xmodel.model.mup`) it is searched too; with one, every
    trial uses it."""

    tokens: int = 16_777_216
    evals: int = 4
    warmup_fraction: float = 0.1
    optimizers: list[str] = field(default_factory=lambda: ["adamw"])  # several: a categorical parameter
    lr_policies: list[str] = field(default_factory=lambda: ["xmodel-2.5"])  # train.mup_lr_policy, likewise

    def validate(self):
        _check_choices("optimizers", self.optimizers, ("adamw", "muon"))
        _check_choices("lr_policies", self.lr_policies, ("xmodel-2.5", "table6", "standard"))
        if self.tokens <= 0 or self.evals <= 0:
            raise ValueError(f"tokens: tokens and evals must be > 0, got {self.tokens}, {self.evals}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction: must be in [0, 1), got {self.warmup_fraction}")


@dataclass
class CoordCheckConfig:
    """μP coordinate check (microsoft/mup's method): models of each width trained `steps` steps at the learning
    rate `lr` from `seeds` seeds; the RMS of each activation is recorded in the forward pass of every step.
    `layers` overrides the preset's depth (None = keep it)."""

    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    steps: int = 4
    seeds: int = 3
    lr: float = 0.01
    layers: int | None = 2
    batch_sequences: int = 8
    sp_init_std: float = 0.02         # standard parametrisation's init std (GPT-2 / Llama)

    def validate(self):
        _check_widths(self.widths, 2, 1)
        if min(self.steps, self.seeds, self.batch_sequences) <= 0 or self.lr <= 0:
            raise ValueError("steps: steps, seeds, batch_sequences and lr must be > 0")


@dataclass
class TransferConfig:
    """μTransfer validation: a learning-rate sweep (`lrs`, a log grid) at every width, each run `tokens` long,
    under μP and under standard parametrisation (SP: no multipliers, init std `sp_init_std`, one learning rate
    for every tensor). `layers` overrides the preset's depth (None = keep it)."""

    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    lrs: list[float] = field(default_factory=lambda: [2.0 ** -k for k in range(12, 2, -1)])
    tokens: int = 1_048_576
    seeds: int = 1
    layers: int | None = None
    warmup_fraction: float = 0.1
    sp_init_std: float = 0.02
    # what is compared: "mup", "sp", μP under a named LR policy ("mup:xmodel-2.5", "mup:table6", "mup:standard"),
    # or μP without scale_depth/√L ("mup:unscaled-depth")
    parametrisations: list[str] = field(default_factory=lambda: ["mup", "sp"])
    axis: Literal["width", "depth"] = "width"  # depth: the sweep runs over `depths` at the config's width
    depths: list[int] = field(default_factory=lambda: [2, 4, 8, 16])

    def validate(self):
        _check_widths(self.widths, 4, 8)
        _check_widths(self.depths, 4, 4, what="depths")
        _check_choices("parametrisations", self.parametrisations,
                       ("mup", "sp", "mup:xmodel-2.5", "mup:table6", "mup:standard", "mup:unscaled-depth"))
        if len(self.lrs) < 3 or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs: need at least 3 positive learning rates, got {self.lrs}")
        if self.tokens <= 0 or self.seeds <= 0:
            raise ValueError(f"tokens: tokens and seeds must be > 0, got {self.tokens}, {self.seeds}")


@dataclass
class MixtureSearchConfig:
    """Decay-stage data-ratio search (Xmodel-2 §2.3): the SFT share in [sft_share_min, sft_share_max] (step
    `sft_share_step`) and a weight in [0, 1] (step 0.05) per SFT category, normalised to a distribution.

    Every trial is a decay branch of `decay_tokens` tokens from one stable checkpoint (trained once for
    `stable_tokens` tokens, or given with --from). The objective is a weighted mean of held-out losses:
    `objective` maps "pretrain" (the pretraining corpora's held-out text) and category names (that category's
    held-out SFT records) to weights.
    """

    stable_tokens: int = 8_388_608
    decay_tokens: int = 2_097_152
    evals: int = 2
    sft_share_min: float = 0.0
    sft_share_max: float = 0.9
    sft_share_step: float = 0.01
    categories: list[str] = field(default_factory=lambda: list(SFT_CATEGORIES))
    objective: dict[str, float] = field(default_factory=lambda: {"pretrain": 1.0, **{c: 0.2 for c in
                                                                                     SFT_CATEGORIES}})

    def validate(self):
        if self.stable_tokens <= 0 or self.decay_tokens <= 0 or self.evals <= 0:
            raise ValueError("decay_tokens: stable_tokens, decay_tokens and evals must be > 0")
        if not 0 <= self.sft_share_min <= self.sft_share_max <= 1 or self.sft_share_step <= 0:
            raise ValueError(f"sft_share_max: need 0 ≤ sft_share_min ≤ sft_share_max ≤ 1 and a step > 0, got "
                             f"{self.sft_share_min}, {self.sft_share_max}, {self.sft_share_step}")
        unknown = [c for c in self.categories if c not in SFT_CATEGORIES]
        if unknown or not self.categories:
            raise ValueError(f"categories: {unknown or 'none given'} (known: {', '.join(SFT_CATEGORIES)})")
        for name, w in self.objective.items():
            if name != "pretrain" and name not in SFT_CATEGORIES:
                raise ValueError(f"objective.{name}: not 'pretrain' or an SFT category")
            if w < 0:
                raise ValueError(f"objective.{name}: weight must be ≥ 0, got {w}")
        if sum(self.objective.values()) <= 0:
            raise ValueError("objective: at least one positive weight is needed")


@dataclass
class SchedulesConfig:
    """WSD vs cosine at equal tokens (`xmodel tune schedules`): a stable run of `stable_steps`, decay branches of
    `decay_fraction` of their start from `branch_fractions` of it (half-life `half_life_fraction` of the
    branch), and one cosine run planned for each branch's end."""

    stable_steps: int = 96
    branch_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    decay_fraction: float = 0.125
    half_life_fraction: float = 0.25
    warmup_steps: int = 4

    def validate(self):
        if self.stable_steps < 2 or not self.branch_fractions or any(not 0 < f <= 1 for f in self.branch_fractions):
            raise ValueError(f"branch_fractions: fractions in (0, 1] of stable_steps ≥ 2, got {self.branch_fractions}")
        if not 0 < self.decay_fraction <= 1 or not 0 < self.half_life_fraction:
            raise ValueError(f"decay_fraction: must be in (0, 1], got {self.decay_fraction}")


@dataclass
class TuneConfig:
    study: StudyConfig = field(default_factory=StudyConfig)
    mup: MupSearchConfig = field(default_factory=MupSearchConfig)
    coord: CoordCheckConfig = field(default_factory=CoordCheckConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    mixture: MixtureSearchConfig = field(default_factory=MixtureSearchConfig)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)


def _check_widths(widths: list[int], count: int, span: int, what: str = "widths") -> None:
    if len(widths) < count or any(w <= 0 for w in widths):
        raise ValueError(f"{what}: need at least {count} positive {what}, got {widths}")
    if max(widths) < span * min(widths):
        raise ValueError(f"{what}: must span at least {span}× (smallest {min(widths)}, largest {max(widths)})")
