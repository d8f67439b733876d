"""`xmodel tune mixture`: the decay-stage data-ratio search of Xmodel-2 §2.3.

The report asks two questions: how much of the decay stage should be SFT data (its answer: 60–69 %, 64 %
used), and how the SFT part should split over the five categories (math, code, logic, knowledge,
commonsense). Each trial proposes an SFT share and a weight per category (normalised to a distribution), and
trains a decay branch of `tune.mixture.decay_tokens` tokens from **one** stable checkpoint — trained once
(`tune.mixture.stable_tokens`) or given with --from — so a trial costs only its decay steps. The objective is
a weighted mean of held-out losses (`tune.mixture.objective`: the pretraining corpora's held-out text and each
category's held-out SFT records). The decay mixture is stratified over the branch's sequences, so the SFT
share a trial trains on is the share it asked for (up to whole sequences); each trial records the realised
shares of the positions the trainer actually read.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna

from ..config import Config, config_to_dict
from ..data.weights import normalise_weights
from ..errors import XmodelError
from ..train import checkpoint as ckpt
from ..train.trainer import train
from .data import TuneData, sft_share_of
from .runs import HeldoutObjective, budget_overrides, fit_to_data, run_budgeted
from .space import clean, derive
from .study import write_yaml

WEIGHT_STEP = 0.05


class ReadRecorder:
    """A batch source that remembers which positions the trainer read (to measure the realised mixture)."""

    def __init__(self, source):
        self.source, self.seq_len = source, source.seq_len
        self.read: list[tuple[int, int]] = []

    def batch(self, start: int, count: int):
        self.read.append((start, count))
        return self.source.batch(start, count)

    def realised_shares(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        n = 0
        for start, count in self.read:
            for name, share in self.source.shares(start, count).items():
                totals[name] = totals.get(name, 0.0) + share * count
            n += count
        return {k: v / max(1, n) for k, v in totals.items()}


def stable_config(cfg: Config, data: TuneData) -> Config:
    m = cfg.tune.mixture
    cfg = fit_to_data(cfg, data)
    over = budget_overrides(cfg, m.stable_tokens, 1, 0.1, data.seq_len)
    over.update({"train.save_every": over["train.max_steps"], "train.keep_last": 1})
    return derive(cfg, over)


def stable_checkpoint(cfg: Config, data: TuneData, out: Path, given: str | None, log=print) -> Path:
    """The checkpoint every trial branches from: --from, or the stable run under OUT/stable (trained once;
    resumed if interrupted; reused when already finished)."""
    if given:
        path = Path(given)
        if not path.is_dir():
            raise XmodelError(f"--from {given}: no such checkpoint directory")
        problem = ckpt.verify(path)
        if problem:
            raise XmodelError(f"--from {given}: invalid checkpoint ({problem})")
        return path
    scfg = stable_config(cfg, data)
    run_dir = out / "stable"
    done = [p for s, p in ckpt.list_checkpoints(run_dir) if s == scfg.train.max_steps and ckpt.verify(p) is None]
    if done:
        log(f"stable checkpoint: {done[0]} (reused)")
        return done[0]
    log(f"training the shared stable stage: {scfg.train.max_steps} steps × {scfg.train.batch_tokens:,} tokens "
        f"→ {run_dir}")
    result = train(scfg.model, scfg.train, data.stable(seed=scfg.train.seed), run_dir,
                   run_record=config_to_dict(scfg), log=log)
    if result.stopped_early or result.last_checkpoint is None:
        raise XmodelError(f"the stable run stopped early: {result.stopped_early}")
    return result.last_checkpoint


def checkpoint_model(path: Path) -> dict:
    """The model section of the run that wrote a checkpoint (a branch must be the same model)."""
    import json

    state = json.loads((path / "trainer_state.json").read_text())
    return state["config"]["model"]


def trial_base(cfg: Config, data: TuneData, checkpoint: Path) -> Config:
    m = cfg.tune.mixture
    cfg = derive(cfg, {f"model.{k}": v for k, v in checkpoint_model(checkpoint).items()})
    if cfg.model.vocab_size < data.vocab_size:
        raise XmodelError(f"--from: the checkpoint's vocabulary ({cfg.model.vocab_size}) is smaller than the data's "
                          f"({data.vocab_size})")
    over = budget_overrides(cfg, m.decay_tokens, m.evals, 0.0, data.seq_len)
    over["train.schedule.decay_start"] = None  # a branch decays from its start (the checkpoint's step)
    return derive(cfg, over)


def settings(cfg: Config, data: TuneData, checkpoint: Path) -> dict:
    m = cfg.tune.mixture
    return {"experiment": "mixture", "checkpoint": str(Path(checkpoint).resolve()), "data": data.description,
            "decay_steps": cfg.train.max_steps, "batch_tokens": cfg.train.batch_tokens,
            "half_life": cfg.train.schedule.half_life, "objective": m.objective, "categories": m.categories,
            "sft_share": [m.sft_share_min, m.sft_share_max, m.sft_share_step], "seed": cfg.train.seed,
            "eval_sequences": cfg.train.eval_sequences}


def suggest_mixture(trial, m, categories: list[str]) -> tuple[float, dict[str, float]]:
    share = clean(trial.suggest_float("sft_share", m.sft_share_min, m.sft_share_max, step=m.sft_share_step))
    raw = {c: clean(trial.suggest_float(f"w_{c}", 0.0, 1.0, step=WEIGHT_STEP)) for c in categories}
    if sum(raw.values()) <= 0:
        raw = {c: 1.0 for c in categories}
    return share, {c: clean(w) for c, w in normalise_weights(raw, "mixture categories").items()}


def make_objective(base: Config, data: TuneData, checkpoint: Path, out: Path):
    m = base.tune.mixture
    categories = [c for c in m.categories if c in data.categories]
    if not categories:
        raise XmodelError(f"tune.mixture.categories: none of {', '.join(m.categories)} has prepared SFT data")
    weights = {k: w for k, w in m.objective.items() if k == "pretrain" or k in data.categories}
    heldout = HeldoutObjective(data, weights, sequences=base.train.eval_sequences)
    sequences = base.train.max_steps * (base.train.batch_tokens // data.seq_len)

    def objective(trial: optuna.Trial) -> float:
        share, dist = suggest_mixture(trial, m, categories)
        trial.set_user_attr("categories", dist)
        source = ReadRecorder(data.decay(share, dist, sequences, seed=base.train.seed))

        def on_eval(step: int, value: float):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"objective {value:.4f} at step {step}")

        outcome = run_budgeted(base, source, out / "trials" / f"trial_{trial.number:04d}", heldout,
                               on_eval=on_eval, branch_from=checkpoint, log=lambda *_: None)
        realised = source.realised_shares()
        trial.set_user_attr("realised_sft_share", round(sft_share_of(realised), 6))
        trial.set_user_attr("realised_shares", {k: round(v, 6) for k, v in realised.items()})
        trial.set_user_attr("sequences_read", sum(c for _, c in source.read))
        trial.set_user_attr("branch_from", str(checkpoint))
        trial.set_user_attr("heldout", {k: round(v, 6) for k, v in outcome.parts.items()})
        if math.isnan(outcome.objective):
            trial.set_user_attr("fail_reason", outcome.result.stopped_early or "non-finite held-out loss")
        return outcome.objective

    return objective


def describe(trial) -> str:
    dist = trial.user_attrs.get("categories") or {}
    return (f"sft_share {clean(trial.params.get('sft_share', math.nan)):.2f}, categories "
            + ", ".join(f"{c} {w:.2f}" for c, w in dist.items()))


def write_best_mixture(study: optuna.Study, path: Path) -> dict:
    """The best trial's decay mixture as a data-config YAML (`data.decay.sft_share`, `data.decay.categories`)."""
    best = study.best_trial
    doc = {"data": {"decay": {"sft_share": clean(best.params["sft_share"]),
                              "categories": best.user_attrs["categories"]}}}
    s = study.user_attrs.get("settings", {})
    header = (f"# xmodel tune mixture: best of study '{study.study_name}' — trial {best.number}, objective "
              f"{best.value:.4f} (weighted held-out loss {s.get('objective')})\n"
              f"# decay branches of {s.get('decay_steps')} steps from {s.get('checkpoint')}; data: "
              f"{s.get('data')}\n")
    write_yaml(path, doc, header)
    return doc


def summary_lines(study: optuna.Study) -> list[str]:
    from .study import counts

    c = counts(study)
    lines = [f"study '{study.study_name}': {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed"]
    try:
        best = study.best_trial
    except ValueError:
        return lines + ["no complete trial yet"]
    lines.append(f"best: trial {best.number}, objective {best.value:.4f}: {describe(best)} "
                 f"(realised SFT share {best.user_attrs.get('realised_sft_share')})")
    complete = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                      key=lambda t: t.value)
    top = complete[:max(1, len(complete) // 10)]
    shares = [clean(t.params["sft_share"]) for t in top]
    lines.append(f"best 10% ({len(top)} trials): SFT share {min(shares):.2f}–{max(shares):.2f} "
                 f"(report: 60–69 %, 64 % used)")
    return lines


def finish(study: optuna.Study, out: Path) -> None:
    from .plots import study_plots

    for line in summary_lines(study):
        print(line)
    try:
        study.best_trial
    except ValueError:
        return
    path = out / "best_mixture.yaml"
    write_best_mixture(study, path)
    print(f"wrote {path}")
    for p in study_plots(study, out / "plots"):
        print(f"wrote {p}")


__all__ = ["finish", "make_objective", "settings", "stable_checkpoint", "trial_base"]
