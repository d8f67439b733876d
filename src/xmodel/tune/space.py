"""The μP search space of the Xmodel-2 report (appendix, Table 5), as Optuna distributions.

| name           | range / options                 | step  | values |
|----------------|---------------------------------|-------|--------|
| scale_emb      | [2, 20]                         | 1     | 19     |
| dim_model_base | {32, 64, 128, 256, 512, 1024}   | –     | 6      |
| scale_depth    | [1, 5]                          | 0.1   | 41     |
| learning_rate  | [0.001, 0.1]                    | 0.001 | 100    |

The equivalent grid has 19 × 6 × 41 × 100 = 467,400 points. The report says its 300 trials replaced
"570,000 in a grid search"; that number does not follow from the table's steps, so we print both.
"""

from __future__ import annotations

import math

from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from ..config import Config, config_to_dict
from ..config.core import build_section, set_dotted

REPORT_GRID_SIZE = 570_000   # Xmodel-2 appendix 6.1

MUP_SPACE: dict[str, BaseDistribution] = {
    "scale_emb": IntDistribution(2, 20, step=1),
    "dim_model_base": CategoricalDistribution([32, 64, 128, 256, 512, 1024]),
    "scale_depth": FloatDistribution(1.0, 5.0, step=0.1),
    "learning_rate": FloatDistribution(0.001, 0.1, step=0.001),
}


def mup_space(optimizers: list[str], lr_policies: list[str] = ("xmodel-2.5",)) -> dict[str, BaseDistribution]:
    """Table 5's space, plus the optimizer and the μP LR policy as categorical parameters when more than one of
    each is searched."""
    space = dict(MUP_SPACE)
    if len(optimizers) > 1:
        space["optimizer"] = CategoricalDistribution(list(optimizers))
    if len(lr_policies) > 1:
        space["lr_policy"] = CategoricalDistribution(list(lr_policies))
    return space if len(space) > len(MUP_SPACE) else MUP_SPACE


def grid_points(dist: BaseDistribution) -> int:
    """How many values a distribution can take (a float without a step has no grid: ValueError)."""
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None:
        return int(round((dist.high - dist.low) / dist.step)) + 1
    raise ValueError(f"{dist}: continuous, no grid")


def grid_size(space: dict[str, BaseDistribution]) -> int:
    return math.prod(grid_points(d) for d in space.values())


def grid_statement(space: dict[str, BaseDistribution] = MUP_SPACE) -> str:
    """One line: the size of the equivalent grid, how it is computed, and how it compares with the report."""
    factors = " × ".join(str(grid_points(d)) for d in space.values())
    size = grid_size(space)
    line = f"equivalent grid: {factors} = {size:,} points ({', '.join(space)})"
    if space is MUP_SPACE and size != REPORT_GRID_SIZE:
        line += (f"; the Xmodel-2 report says {REPORT_GRID_SIZE:,}, which its Table 5 steps do not give")
    return line


def suggest(trial, space: dict[str, BaseDistribution]) -> dict:
    """Ask the trial for every parameter of the space (the study's sampler chooses)."""
    params = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            value = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
            params[name] = clean(value) if dist.step is not None else value
    return params


def clean(value: float) -> float:
    """A grid value without float noise: Optuna stores 0.1 · 34 as 3.4000000000000004."""
    return round(float(value), 8)


def mup_overrides(params: dict) -> dict[str, object]:
    """The searched values as dotted config keys (applied with `derive`, written to the best-config YAML)."""
    out = {"model.scale_emb": clean(params["scale_emb"]), "model.dim_model_base": int(params["dim_model_base"]),
           "model.scale_depth": clean(params["scale_depth"]),
           "train.schedule.max_lr": clean(params["learning_rate"])}
    if "optimizer" in params:
        out["train.optimizer"] = params["optimizer"]
    if "lr_policy" in params:
        out["train.mup_lr_policy"] = params["lr_policy"]
    return out


def derive(cfg: Config, overrides: dict[str, object]) -> Config:
    """A copy of `cfg` with dotted keys replaced, checked by the config system like any user input."""
    data = config_to_dict(cfg)
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return build_section(Config, data)


def nest(overrides: dict[str, object]) -> dict:
    """{"model.scale_emb": 12} → {"model": {"scale_emb": 12}} (the layout of a config YAML)."""
    out: dict = {}
    for key, value in overrides.items():
        set_dotted(out, key, value)
    return out
