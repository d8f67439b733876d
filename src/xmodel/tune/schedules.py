"""`xmodel tune schedules`: WSD against cosine at equal tokens, and the loss envelope of decay branches.

The claim the recipe rests on (MiniCPM §4, Xmodel-2 §2.2): one WSD stable run with short decay branches from
several of its checkpoints reaches, at each branch's end, the loss a cosine schedule reaches when it is planned
for exactly that many tokens — so a single run gives the whole curve of "best loss at N tokens" (the envelope)
instead of one cosine run per N.

1. A stable run (WSD held at max_lr after warmup) of `tune.schedules.stable_steps`, with a checkpoint at each of
   `tune.schedules.branch_fractions` of it.
2. From each such checkpoint at step s, a decay branch of `decay_fraction`·s steps on the same data stream (it
   continues where the stable run was), the exponential decay with half-life `half_life_fraction` of the branch.
3. For each branch end s + d, a cosine run planned for exactly s + d steps (same warmup, max_lr, min_lr 0.1·max
   as is customary), from scratch.

Held-out loss at every end goes to OUT/schedules.json, a table to stdout, and OUT/schedules.png draws the stable
curve, the branches and the cosine points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import Config
from ..train import checkpoint as ckpt
from ..train.callbacks import Checkpointing, MetricsWriter
from ..train.metrics import read_metrics
from ..train.start import Start
from ..train.trainer import train
from .data import TuneData
from .plots import _agg, save_figure
from .runs import HeldoutObjective, TrialEvaluations, fit_to_data, run_budgeted
from .space import derive


class Offset:
    """A batch source read from `offset` on: a decay branch continues the stable run's data stream."""

    def __init__(self, source, offset: int):
        self.source, self.offset, self.seq_len = source, offset, source.seq_len

    def batch(self, start: int, count: int):
        return self.source.batch(self.offset + start, count)


def plan(cfg: Config) -> list[tuple[int, int]]:
    """(branch start s, branch length d) for every branch point."""
    s = cfg.tune.schedules
    starts = sorted({max(1, round(f * s.stable_steps)) for f in s.branch_fractions})
    return [(start, max(1, round(s.decay_fraction * start))) for start in starts]


def base_config(cfg: Config, data: TuneData) -> Config:
    s = cfg.tune.schedules
    per_step = cfg.train.batch_tokens - cfg.train.batch_tokens % (data.seq_len * cfg.train.micro_batch_size)
    return derive(fit_to_data(cfg, data), {
        "train.batch_tokens": per_step, "train.batch_tokens_start": None, "train.sample_prompts": [],
        "train.schedule.warmup_steps": s.warmup_steps, "train.log_every": 1, "train.eval_every": 0})


def run_schedules(cfg: Config, data: TuneData, out: Path, log=print) -> dict:
    s = cfg.tune.schedules
    base = base_config(cfg, data)
    branches = plan(cfg)
    starts = [b[0] for b in branches]
    objective = HeldoutObjective(data, {"pretrain": 1.0}, sequences=base.train.eval_sequences)
    log(f"schedules: WSD stable run of {s.stable_steps} steps × {base.train.batch_tokens:,} tokens, decay branches "
        f"from steps {starts}, one cosine run per branch end, on {data.description}")
    # 1. The stable run, with a checkpoint kept at every branch point.
    every = math.gcd(*starts)
    stable_cfg = derive(base, {"train.max_steps": s.stable_steps, "train.schedule.kind": "wsd",
                               "train.schedule.decay_start": None, "train.save_every": every,
                               "train.keep_every": every, "train.keep_last": 1})
    stable_dir = out / "stable"
    evaluations = TrialEvaluations(objective, every, None)  # held-out loss at every branch point
    stable = train(stable_cfg.model, stable_cfg.train, data.stable(seed=base.train.seed), stable_dir,
                   callbacks=[evaluations, MetricsWriter(), Checkpointing({"experiment": "schedules"})],
                   log=lambda *_: None)
    stable_heldout = dict(evaluations.evaluations)
    by_step = dict(ckpt.list_checkpoints(stable_dir))
    stable_losses = {r["step"]: r["loss"] for r in read_metrics(stable_dir / "metrics.jsonl") if "loss" in r}
    rows = []
    for start, length in branches:
        # 2. The decay branch, continuing the stable run's data.
        offset = start * stable_cfg.train.batch_tokens // data.seq_len
        bcfg = derive(base, {"train.max_steps": length, "train.schedule.kind": "wsd",
                             "train.schedule.decay_start": None,
                             "train.schedule.half_life": max(1e-3, s.half_life_fraction * length)})
        branch = run_budgeted(bcfg, Offset(data.stable(seed=base.train.seed), offset),
                              out / "branches" / f"from_{start}", objective, branch_from=by_step[start],
                              log=lambda *_: None)
        # 3. Cosine planned for exactly as many steps.
        total = start + length
        ccfg = derive(base, {"train.max_steps": total, "train.schedule.kind": "cosine",
                             "train.schedule.total_steps": total,
                             "train.schedule.min_lr": 0.1 * base.train.schedule.max_lr})
        cosine = run_budgeted(ccfg, data.stable(seed=base.train.seed), out / "cosine" / f"steps_{total}", objective,
                              log=lambda *_: None)
        rows.append({"branch_start": start, "branch_steps": length, "steps": total,
                     "tokens": total * base.train.batch_tokens, "stable_train_loss": stable_losses.get(start),
                     "stable_heldout": stable_heldout.get(start),
                     "wsd_branch": branch.objective, "cosine": cosine.objective})
        log(f"  {total:>6} steps ({total * base.train.batch_tokens:,} tokens): stable at {start} "
            f"{stable_heldout.get(start, math.nan):.4f}, WSD branch from it {branch.objective:.4f}, cosine "
            f"{cosine.objective:.4f}")
    result = {"stable_steps": s.stable_steps, "batch_tokens": base.train.batch_tokens, "rows": rows,
              "stable_train_loss": stable_losses, "stable_eval_loss": stable.eval_loss}
    out.mkdir(parents=True, exist_ok=True)
    (out / "schedules.json").write_text(json.dumps(result, indent=1))
    log(f"wrote {plot(result, out / 'schedules.png')}")
    return result


def plot(result: dict, path: Path) -> Path:
    plt = _agg()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    tokens = result["batch_tokens"]
    curve = sorted((int(k), v) for k, v in result["stable_train_loss"].items())
    ax.plot([k * tokens for k, _ in curve], [v for _, v in curve], color="0.6", lw=1, label="WSD stable (train loss)")
    rows = result["rows"]
    ax.plot([r["branch_start"] * tokens for r in rows], [r["stable_heldout"] for r in rows], "^", color="0.3",
            label="WSD stable at the branch points (held-out)")
    ax.plot([r["tokens"] for r in rows], [r["wsd_branch"] for r in rows], "o-", color="tab:blue",
            label="WSD decay branch ends (held-out)")
    ax.plot([r["tokens"] for r in rows], [r["cosine"] for r in rows], "s--", color="tab:red",
            label="cosine planned for that many tokens (held-out)")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("WSD decay branches vs cosine at equal tokens")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
