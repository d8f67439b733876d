"""`xmodel quickstart`: the main job — the whole recipe at nano scale in about ten minutes on a laptop CPU."""

from __future__ import annotations

from .common import add_data_root_arg


def register(sub) -> None:
    p = sub.add_parser(
        "quickstart", help="the whole recipe at nano scale: tokenizer → data → stable → decay → eval → report",
        description="Train a Unigram tokenizer on the data root's corpora, pack shards, run a nano model's stable "
                    "stage and a decay branch with SFT data mixed in, measure held-out loss and WikiText-2 "
                    "perplexity, evaluate on the commonsense suite, and write report.md, plots, metrics and a model "
                    "directory that transformers loads. Rerunning reuses finished steps.")
    p.add_argument("--output", default="runs/quickstart", help="run folder (default runs/quickstart)")
    add_data_root_arg(p)
    p.add_argument("--fast", action="store_true", help="a few minutes: fewer steps (what CI runs)")
    p.add_argument("--stable-steps", type=int, help="override the stable stage's steps")
    p.add_argument("--decay-steps", type=int, help="override the decay branch's steps")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from ..errors import XmodelError
    from ..recipes.quickstart import QuickstartPlan, run_quickstart

    plan = QuickstartPlan.fast() if args.fast else QuickstartPlan()
    for field, value in (("stable_steps", args.stable_steps), ("decay_steps", args.decay_steps)):
        if value is not None:
            if value < 1:
                raise XmodelError(f"--{field.replace('_', '-')}: must be ≥ 1")
            plan = dataclasses.replace(plan, **{field: value})
    s = run_quickstart(args.output, args.data_root, plan)
    w = s["wikitext2"]
    print("\n=== Xmodel quickstart done ===")
    print(f"report:     {s['output']}/report.md (and report.html)")
    print(f"plots:      {s['output']}/plots/loss.png, lr.png")
    print(f"metrics:    {s['output']}/stable/metrics.jsonl, {s['output']}/decay/metrics.jsonl")
    print(f"model:      {s['model_dir']}  (AutoModelForCausalLM.from_pretrained after `import xmodel`)")
    for mix in ("stable", "decay"):
        print(f"held-out loss ({mix} mixture): stable {s['stable'][f'{mix}_heldout_loss']:.3f} → "
              f"decay {s['decay'][f'{mix}_heldout_loss']:.3f}")
    print(f"WikiText-2 perplexity: stable {w['stable']['perplexity']:.1f} → decay {w['decay']['perplexity']:.1f}")
    for row in s["samples"]:
        print(f"  {row['prompt']!r} → {row['completion']!r}")
    print(f"total time {s['timings']['total_s'] / 60:.1f} min")
    return 0
