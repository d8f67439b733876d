"""`xmodel schedule plot`: draw a config's learning-rate schedule (and its batch ramp) to a PNG."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import XmodelError
from .common import add_config_args, config_from_args, non_negative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("schedule", help="plot the learning-rate schedule of a config",
                       description="Plot lr(step) of the config's train.schedule (WSD, cosine, linear or "
                                   "constant). With --decay-from N the WSD "
                                   "decay starts at step N, as in a decay branch from step N.")
    p.add_argument("action", choices=["plot"], help="what to do (plot)")
    p.add_argument("config_file", nargs="?", metavar="CONFIG", help="YAML config or packaged recipe (xmodel-2, "
                                                                     "xmodel-lm); same as --config")
    p.add_argument("--preset", default=None)
    p.add_argument("--steps", type=positive_int, default=None, help="steps to draw (default: train.max_steps, or past "
                                                            "the decay start plus 4 half-lives)")
    p.add_argument("--decay-from", type=non_negative_int, default=None, metavar="N")
    p.add_argument("--output", default="schedule.png")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..train.schedule import lr_at

    if args.config_file:
        args.config = args.config or args.config_file
    cfg = config_from_args(args, args.preset)
    sched = cfg.train.schedule
    if args.decay_from is not None:
        if sched.kind != "wsd":
            raise XmodelError("--decay-from: only a WSD schedule has a decay start")
        sched = dataclasses.replace(sched, decay_start=args.decay_from)
        try:
            sched.validate()
        except ValueError as e:
            raise XmodelError(f"--decay-from: {e}") from None
    steps = args.steps or max(cfg.train.max_steps,
                              int((sched.decay_start or 0) + 4 * sched.half_life) if sched.decay_start else 0)
    xs = list(range(steps))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, [lr_at(s, sched) for s in xs], label=f"{sched.kind} lr")
    if sched.kind == "wsd" and sched.decay_start is not None:
        ax.axvline(sched.decay_start, ls="--", c="gray", lw=0.8, label=f"decay start S={sched.decay_start}")
    t = cfg.train
    if t.batch_tokens_start and t.batch_ramp_steps:  # the batch step-up (or ramp) on a second axis
        from ..train.batching import BatchPlan

        plan = BatchPlan(seq_len=cfg.data.seq_len, micro_batch=1, world_size=1, end_tokens=t.batch_tokens,
                         start_tokens=t.batch_tokens_start, ramp_steps=t.batch_ramp_steps, ramp=t.batch_ramp)
        twin = ax.twinx()
        twin.plot(xs, [plan.sequences_at(x) * cfg.data.seq_len / 1e6 for x in xs], color="tab:orange", lw=1,
                  label="batch (M tokens)")
        twin.set_ylabel("global batch, M tokens", color="tab:orange")
        twin.set_ylim(bottom=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    title = f"max_lr {sched.max_lr:g}, warmup {sched.warmup_steps}"
    if sched.kind == "wsd":
        title += f", half-life T={sched.half_life:g}"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0
