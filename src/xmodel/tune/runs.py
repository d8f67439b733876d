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
from ..train.trainer import TrainResult, autocast_dtype, evaluate_loss, train
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


def run_budgeted(cfg: Config, data_source, run_dir: str | Path, objective: HeldoutObjective, *,
                 on_eval: Callable[[int, float], None] | None = None, branch_from=None,
                 on_model: Callable[[torch.nn.Module], None] | None = None, log=print) -> RunOutcome:
    """Train `cfg` (its budget set by `budget_overrides`) without checkpoints, evaluating `objective` every
    `train.eval_every` steps of this run and after its last step. `on_eval(step, value)` is called at the
    evaluations before the last and may raise (optuna.TrialPruned) to end the run there."""
    state: dict = {"model": None, "first": None, "amp": None}
    evaluations: list[tuple[int, float]] = []
    parts_last: dict[str, float] = {}
    last, every = cfg.train.max_steps, cfg.train.eval_every

    def got_model(model):
        state["model"] = model
        state["amp"] = autocast_dtype(cfg.train.precision, next(model.parameters()).device)
        if on_model is not None:
            on_model(model)

    def at_step(record: dict):
        if state["first"] is None:  # a decay branch counts its steps from the stable checkpoint's
            state["first"] = record["step"] - 1
        step = record["step"] - state["first"]
        if step % every and step != last:
            return
        value, parts = objective(state["model"], cfg.train.micro_batch_size, state["amp"])
        parts_last.clear()
        parts_last.update(parts)
        evaluations.append((step, value))
        record["eval_loss"] = value
        if on_eval is not None and step < last:
            on_eval(step, value)

    result = train(cfg, data_source, run_dir, branch_from=branch_from, progress=False, log=log,
                   on_model=got_model, on_step=at_step, save_checkpoints=False)
    finished = evaluations and evaluations[-1][0] == last and not result.stopped_early
    value = evaluations[-1][1] if finished else math.nan
    return RunOutcome(result, value if math.isfinite(value) else math.nan, dict(parts_last), evaluations,
                      state["model"])


__all__ = ["budget_overrides", "HeldoutObjective", "RunOutcome", "run_budgeted", "derive"]
