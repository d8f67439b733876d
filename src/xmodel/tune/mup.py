"""`xmodel tune mup`: Bayesian search of the μP values and learning rate on the nano model (Xmodel-2 §6.1).

Each trial trains the configured model (nano by default) from scratch for `tune.mup.tokens` tokens with the
trial's scale_emb, dim_model_base, scale_depth and learning rate, and reports its held-out loss on the
pretraining corpora `tune.mup.evals` times; the pruner may stop it at any of those but the last, whose value
is the objective. All trials read the same data in the same order from the same seed, so they differ only by
their parameters.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna

from ..config import Config, config_to_dict
from .data import TuneData
from .runs import HeldoutObjective, budget_overrides, fit_to_data, run_budgeted
from .space import clean, derive, grid_statement, mup_overrides, mup_space, nest, suggest
from .study import write_yaml


def trial_base(cfg: Config, data: TuneData) -> Config:
    """The config every trial starts from: the data's vocabulary and sequence length, the trial budget."""
    m = cfg.tune.mup
    cfg = fit_to_data(cfg, data)
    overrides = budget_overrides(cfg, m.tokens, m.evals, m.warmup_fraction, data.seq_len)
    if len(m.optimizers) == 1:
        overrides["train.optimizer"] = m.optimizers[0]
    if len(m.lr_policies) == 1:
        overrides["train.mup_lr_policy"] = m.lr_policies[0]
    return derive(cfg, overrides)


def study_space(settings_or_cfg) -> dict:
    """The space a study searches: from a config, or from the settings stored with the study."""
    if isinstance(settings_or_cfg, dict):
        return mup_space(settings_or_cfg.get("optimizers") or ["adamw"],
                         settings_or_cfg.get("lr_policies") or ["xmodel-2.5"])
    m = settings_or_cfg.tune.mup
    return mup_space(m.optimizers, m.lr_policies)


def settings(cfg: Config, data: TuneData) -> dict:
    """What defines the objective; stored with the study so that a rerun cannot silently change it."""
    shape = {k: v for k, v in config_to_dict(cfg)["model"].items() if k not in ("scale_emb", "dim_model_base",
                                                                               "scale_depth")}
    t = cfg.train
    return {"experiment": "mup", "preset": cfg.preset, "model": shape, "data": data.description,
            "data_config": data_section(data), "steps": t.max_steps,
            "batch_tokens": t.batch_tokens, "seq_len": data.seq_len, "evals": cfg.tune.mup.evals,
            "eval_sequences": t.eval_sequences, "warmup_steps": t.schedule.warmup_steps,
            "schedule": t.schedule.kind, "seed": t.seed, "precision": t.precision,
            "optimizers": list(cfg.tune.mup.optimizers), "lr_policies": list(cfg.tune.mup.lr_policies),
            "space": grid_statement(study_space(cfg))}


def data_section(data: TuneData) -> dict | None:
    """The data section trials trained on (None for synthetic data): written into the best config, so that
    `xmodel train --data DIR --config best_mup.yaml` trains on the same mixture."""
    from ..config.core import section_to_dict

    config = getattr(data, "config", None)
    return section_to_dict(config) if config is not None else None


def describe(trial) -> str:
    p = {k: clean(v) if isinstance(v, float) else v for k, v in trial.params.items()}
    return (f"scale_emb {p.get('scale_emb')}, dim_model_base {p.get('dim_model_base')}, "
            f"scale_depth {p.get('scale_depth')}, lr {p.get('learning_rate')}"
            + "".join(f", {p[k]}" for k in ("optimizer", "lr_policy") if k in p))


def make_objective(base: Config, data: TuneData, out_dir: Path):
    """The Optuna objective of a μP study (`base` from `trial_base`)."""
    heldout = HeldoutObjective(data, {"pretrain": 1.0}, sequences=base.train.eval_sequences)
    tokens_per_step = base.train.batch_tokens
    space = study_space(base)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        cfg = derive(base, mup_overrides(params))

        def on_eval(step: int, value: float):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"held-out loss {value:.4f} at step {step}")

        outcome = run_budgeted(cfg, data.stable(seed=cfg.train.seed), out_dir / "trials" / f"trial_{trial.number:04d}",
                               heldout, on_eval=on_eval, log=lambda *_: None)
        trial.set_user_attr("tokens", outcome.result.step * tokens_per_step)
        trial.set_user_attr("precision", outcome.result.precision)  # "auto" resolves per machine: say which
        trial.set_user_attr("train_loss", outcome.result.losses[-1] if outcome.result.losses else None)
        if math.isnan(outcome.objective):
            trial.set_user_attr("fail_reason", outcome.result.stopped_early or "non-finite held-out loss")
        return outcome.objective

    return objective


def write_best_config(study: optuna.Study, path: Path) -> dict:
    """The best trial's values as a config YAML (preset + the four searched values) the trainer accepts.
    Written to a temporary name and renamed, so the file is whole or absent."""
    best = study.best_trial
    s = study.user_attrs.get("settings", {})
    params = dict(best.params)
    if "optimizer" not in params and s.get("optimizers"):  # one optimizer: every trial used it
        params["optimizer"] = s["optimizers"][0]
    if "lr_policy" not in params and s.get("lr_policies"):
        params["lr_policy"] = s["lr_policies"][0]
    values = nest(mup_overrides(params))
    doc = {"preset": s["preset"], **values} if s.get("preset") else values
    if s.get("data_config"):
        doc["data"] = s["data_config"]
    header = (f"# xmodel tune mup: best of study '{study.study_name}' — trial {best.number}, held-out loss "
              f"{best.value:.4f} after {best.user_attrs.get('tokens', 0):,} tokens\n"
              f"# ({s.get('data', '?')}). μP values transfer across widths: train another size with\n"
              f"#   xmodel train --preset xmodel-2-1.2b --config {path.name} --data DIR --tokenizer DIR\n"
              f"# (the data section is the one the trials trained on).\n")
    write_yaml(path, doc, header)
    return doc


def summary_lines(study: optuna.Study) -> list[str]:
    from .study import counts

    c = counts(study)
    lines = [f"study '{study.study_name}': {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed, "
             f"{c['running']} running, {c['waiting']} queued"]
    space = study_space(study.user_attrs.get("settings", {}))
    lines.append(grid_statement(space) + f"; this study evaluated {c['complete'] + c['pruned']}")
    try:
        best = study.best_trial
    except ValueError:
        return lines + ["no complete trial yet"]
    lines.append(f"best: trial {best.number}, held-out loss {best.value:.4f}: {describe(best)}")
    complete = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                      key=lambda t: t.value)
    top = complete[:max(1, len(complete) // 10)]
    lrs = [clean(t.params["learning_rate"]) for t in top]
    bases = sorted({t.params["dim_model_base"] for t in top})
    lines.append(f"best 10% ({len(top)} trials): learning_rate {min(lrs):g}–{max(lrs):g}, dim_model_base "
                 f"{', '.join(map(str, bases))} (report: learning_rate 0.01–0.02, dim_model_base < 256)")
    return lines
