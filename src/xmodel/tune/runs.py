"""One wind-tunnel training run: the trainer with a token budget, held-out evaluations and a callback per
evaluation (where Optuna's pruner decides). Every experiment trains through `run_budgeted`, so all of them
share the trainer's optimizer, μP groups, schedule and non-finite-step handling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import Config
from ..train.callbacks import Callback, MetricsWriter
from ..train.start import Start
from ..train.step import evaluate_loss
from ..train.trainer import TrainResult, train
from .data import TuneData
from .space import derive


def fit_to_data(cfg: Config, data: TuneData) -> Config:
    """The config with the data's vocabulary and a context that holds its sequences."""
    return derive(cfg, {"model.vocab_size": data.vocab_size,
                        "model.max_position_embeddings": max(cfg.model.max_position_embeddings, data.seq_len)})


def budget_overrides(cfg: Config, tokens: int, evals: int, warmup_fraction: float, seq_len: int) -> dict:
    """Dotted keys that turn a config into a `tokens`-token run with `evals` evaluations."""
    per_step = cfg.train.batch_tokens - cfg.train.batch_tokens % (seq_len * cfg.train.micro_batch_size)
    if per_step <= 0:
        raise ValueError(f"train.batch_tokens: {cfg.train.batch_tokens} is less than one micro-batch "
                         f"({cfg.train.micro_batch_size} × {seq_len} tokens)")
    steps = max(1, round(tokens / per_step))
    return {"train.max_steps": steps, "train.batch_tokens": per_step, "train.batch_tokens_start": None,
            "train.eval_every": max(1, steps // max(1, evals)), "train.log_every": max(1, steps // 20),
            "train.schedule.warmup_steps": int(warmup_fraction * steps), "train.sample_prompts": []}


@dataclass
class HeldoutObjective:
    """Weighted mean held-out loss over named sets ("pretrain", SFT categories) of a `TuneData`."""

    data: TuneData
    weights: dict[str, float]
    sequences: int = 64

    def __post_init__(self):
        self.weights = {k: w for k, w in self.weights.items() if w > 0}
        self.sources = {k: self.data.heldout(k) for k in self.weights}
        self.counts = {k: min(self.sequences, self.data.heldout_size(k)) for k in self.weights}

    def __call__(self, model, micro_batch: int, amp_dtype) -> tuple[float, dict[str, float]]:
        device = next(model.parameters()).device
        parts = {k: evaluate_loss(model, src, self.counts[k], micro_batch, device, amp_dtype)
                 for k, src in self.sources.items()}
        total = sum(self.weights.values())
        return sum(self.weights[k] * v for k, v in parts.items()) / total, parts


@dataclass
class RunOutcome:
    result: TrainResult
    objective: float                       # last evaluation (nan when the run diverged)
    parts: dict[str, float] = field(default_factory=dict)
    evaluations: list[tuple[int, float]] = field(default_factory=list)
    model: torch.nn.Module | None = None


class TrialEvaluations(Callback):
    """The objective every `every` steps of this run and after its last; before the last, `on_eval(step,
    value)` may raise (optuna.TrialPruned) to end the run there. Steps count from the run's own start (a decay
    branch's first step is 1)."""

    def __init__(self, objective: HeldoutObjective, every: int, on_eval: Callable[[int, float], None] | None):
        self.objective, self.every, self.on_eval = objective, every, on_eval
        self.evaluations: list[tuple[int, float]] = []
        self.parts: dict[str, float] = {}

    def on_start(self, run):
        self.first, self.model = run.state.step, run.built.module

    def on_step(self, run, record):
        step, last = run.state.step - self.first, run.last_step - self.first
        if (not self.every or step % self.every) and step != last:  # every 0: the last step only
            return
        value, self.parts = self.objective(run.built.model, run.train.micro_batch_size, run.built.amp_dtype)
        self.evaluations.append((step, value))
        record["eval_loss"] = value
        if self.on_eval is not None and step < last:
            self.on_eval(step, value)


def run_budgeted(cfg: Config, data_source, run_dir: str | Path, objective: HeldoutObjective, *,
                 on_eval: Callable[[int, float], None] | None = None, branch_from=None,
                 callbacks: list[Callback] = (), log=print) -> RunOutcome:
    """Train `cfg` (its budget set by `budget_overrides`) without checkpoints, evaluating `objective` every
    `train.eval_every` steps of this run and after its last step (`TrialEvaluations`). `callbacks` run after
    the evaluations (e.g. hooks on the model)."""
    evaluations = TrialEvaluations(objective, cfg.train.eval_every, on_eval)
    start = Start(stage="decay", branch_from=Path(branch_from)) if branch_from is not None else Start(resume="none")
    result = train(cfg.model, cfg.train, data_source, run_dir, start=start,
                   callbacks=[evaluations, *callbacks, MetricsWriter()], log=log)
    done = evaluations.evaluations
    finished = done and done[-1][0] == cfg.train.max_steps and not result.stopped_early
    value = done[-1][1] if finished else math.nan
    return RunOutcome(result, value if math.isfinite(value) else math.nan, dict(evaluations.parts), done,
                      evaluations.model)


__all__ = ["budget_overrides", "HeldoutObjective", "RunOutcome", "run_budgeted", "derive"]
