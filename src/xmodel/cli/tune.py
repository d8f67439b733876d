"""`xmodel tune`: the wind tunnel — μP search, coordinate check, μTransfer validation, decay-mixture search."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import XmodelError
from .common import add_config_args, config_from_args

EXPERIMENTS = {
    "mup": "Bayesian search (Optuna GP or TPE) of scale_emb, dim_model_base, scale_depth and the learning rate "
           "over the Xmodel-2 report's Table 5 space, on the nano model",
    "coord-check": "μP coordinate check: activation RMS over the first steps at several widths, μP vs standard "
                   "parametrisation (microsoft/mup's method)",
    "transfer": "μTransfer validation: learning-rate sweeps at ≥ 4 widths (or depths: tune.transfer.axis) under "
                "μP and standard parametrisation (or μP variants), with the optimum learning rate per size and "
                "its drift",
    "mixture": "decay-stage data-ratio search: SFT share and the distribution over the five SFT categories, "
               "every trial a decay branch from one stable checkpoint",
    "schedules": "WSD vs cosine at equal tokens: decay branches from several points of one stable run against a "
                 "cosine run planned for each branch's end (the loss envelope)",
    "report": "plots, summary and best config of an existing study (e.g. one shared by several machines)",
}


def register(sub) -> None:
    p = sub.add_parser("tune", help="the wind tunnel: tune on a nano model, transfer to 1.2B",
                       description="The Xmodel-2 wind tunnel. " + "; ".join(f"{k}: {v}" for k, v in
                                                                          EXPERIMENTS.items()) + ".")
    tsub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(p))
    tsub.required = True
    for name, help_text in EXPERIMENTS.items():
        q = tsub.add_parser(name, help=help_text, description=help_text + ".",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        q.add_argument("--output", default=None, metavar="DIR",
                       help=f"where trials, plots and results go (default runs/tune/{name})")
        if name != "report":
            q.add_argument("--preset", default="nano", help="model shape to tune on (default nano)")
            q.add_argument("--data", default="synthetic" if name == "coord-check" else None,
                           required=name != "coord-check", metavar="DIR|synthetic",
                           help="a directory written by `xmodel data prepare`, or 'synthetic' (learnable token "
                                "patterns; for smoke tests)")
            q.add_argument("--seq-len", type=int, default=64, help="sequence length of --data synthetic")
            q.add_argument("--vocab", type=int, default=256, help="vocabulary of --data synthetic")
            q.add_argument("--threads", type=int, default=None,
                           help="torch threads per process (default: the cores divided among the workers)")
        if name in ("mup", "mixture", "report"):
            q.add_argument("--storage", default=None, metavar="URL|FILE",
                           help="Optuna storage: an SQLAlchemy URL (sqlite:///f.db, postgresql://…) or a file "
                                "(SQLite); default OUTPUT/study.db. Workers and machines sharing it share the "
                                "study; rerunning the command resumes it")
            q.add_argument("--study-name", default=None if name == "report" else name,
                           required=name == "report", help="study name in the storage")
        if name in ("mup", "mixture"):
            q.add_argument("--n-trials", type=int, default=None,
                           help="finished trials the study aims for (= tune.study.n_trials)")
            q.add_argument("--sampler", choices=["gp", "tpe"], default=None,
                           help="gp: Gaussian-process BO; tpe: tree-structured Parzen estimator "
                                "(= tune.study.sampler)")
            q.add_argument("--workers", type=int, default=1,
                           help="worker processes on this machine sharing the study (default 1)")
            q.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
        if name == "mixture":
            q.add_argument("--from", dest="stable_from", default=None, metavar="CHECKPOINT",
                           help="stable-stage checkpoint to branch every trial from (default: train one for "
                                "tune.mixture.stable_tokens tokens, once)")
        if name != "report":
            add_config_args(q)
        q.set_defaults(func=run)


def run(args) -> int:
    import warnings

    # Each decay branch reads its checkpoint with torch.distributed.checkpoint in one process; it says so, once
    # per trial.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    out = Path(args.output or f"runs/tune/{args.experiment}")
    if args.experiment == "report":
        return report(args, out)
    cfg = load(args)
    set_threads(args)
    data = open_data(args, cfg)
    if args.experiment == "mup":
        return run_mup(args, cfg, data, out)
    if args.experiment == "coord-check":
        from ..tune.coord import run_coord_check

        return run_coord_check(cfg, data, out)
    if args.experiment == "transfer":
        from ..tune.transfer import run_transfer

        return run_transfer(cfg, data, out)
    if args.experiment == "schedules":
        from ..tune.schedules import run_schedules

        run_schedules(cfg, data, out)
        return 0
    return run_mixture(args, cfg, data, out)


def load(args):
    overrides = list(args.overrides or [])
    if getattr(args, "n_trials", None) is not None:
        overrides += ["--tune.study.n_trials", str(args.n_trials)]
    if getattr(args, "sampler", None) is not None:
        overrides += ["--tune.study.sampler", args.sampler]
    args.overrides = overrides
    return config_from_args(args, args.preset)


def set_threads(args) -> None:
    import torch

    workers = max(1, getattr(args, "workers", 1))
    # With several workers the launching process trains nothing but the mixture search's shared stable stage,
    # before the workers start: that gets every core; each worker gets its share.
    launcher = workers > 1 and getattr(args, "worker_index", None) is None
    threads = args.threads or max(1, (os.cpu_count() or 1) // (1 if launcher else workers))
    torch.set_num_threads(threads)


def open_data(args, cfg):
    from ..tune.data import open_data as open_

    if args.seq_len < 8 or args.vocab < 16:
        raise XmodelError("--seq-len must be ≥ 8 and --vocab ≥ 16")
    return open_(args.data, cfg.data, vocab_size=args.vocab, seq_len=args.seq_len)


# ---- studies: mup and mixture ------------------------------------------------------------------------------

def study_location(args, out: Path) -> str:
    return args.storage or str(out / "study.db")


def worker_command(args) -> list[str]:
    """This command for one worker process (same options, one worker, its index appended by the caller)."""
    cmd = [sys.executable, "-m", "xmodel.cli.main", "tune", args.experiment, "--output", args.output_resolved,
           "--preset", args.preset, "--data", args.data, "--seq-len", str(args.seq_len), "--vocab",
           str(args.vocab), "--storage", args.storage_resolved, "--study-name", args.study_name]
    if args.config:
        cmd += ["--config", args.config]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if getattr(args, "stable_from", None):
        cmd += ["--from", args.stable_from]
    return cmd + list(args.overrides)


def run_workers(args, n: int) -> None:
    """Start n worker processes on the shared study and wait for them (Ctrl-C stops them all)."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(worker_command(args) + ["--threads", str(threads), "--worker-index", str(k)],
                              env=env) for k in range(n)]
    print(f"started {n} workers ({threads} threads each): pids {', '.join(str(p.pid) for p in procs)}")
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    bad = [(k, c) for k, c in enumerate(codes) if c not in (0,)]
    if bad:
        raise XmodelError(f"worker {bad[0][0]} exited with code {bad[0][1]} (see its output above)")


def run_mup(args, cfg, data, out: Path) -> int:
    from ..tune import mup
    from ..tune.study import open_study, run_worker
    from ..tune.space import grid_statement

    base = mup.trial_base(cfg, data)
    storage = study_location(args, out)
    s = cfg.tune.study
    settings = mup.settings(base, data)
    worker = args.worker_index or 0
    study = open_study(storage, args.study_name, s, settings, worker=worker, eval_every=base.train.eval_every)
    if args.worker_index is None:
        print(grid_statement())
        print(f"each trial: {base.train.max_steps} steps × {base.train.batch_tokens:,} tokens on {data.description}"
              f"; study '{args.study_name}' in {storage}; aiming for {s.n_trials} finished trials ({s.sampler})")
    if args.workers > 1 and args.worker_index is None:
        args.output_resolved, args.storage_resolved = str(out), storage
        run_workers(args, args.workers)
    else:
        prefix = f"[worker {args.worker_index}] " if args.worker_index is not None else ""
        run_worker(study, mup.make_objective(base, data, out), s, worker=worker,
                   log=lambda m: print(prefix + m, flush=True), describe=mup.describe)
    if args.worker_index is None:
        finish_mup(study, out)
    return 0


def finish_mup(study, out: Path) -> None:
    from ..tune import mup
    from ..tune.plots import study_plots

    for line in mup.summary_lines(study):
        print(line)
    try:
        study.best_trial
    except ValueError:
        return
    path = out / "best_mup.yaml"
    mup.write_best_config(study, path)
    print(f"wrote {path}")
    for p in study_plots(study, out / "plots", params=["scale_emb", "dim_model_base", "scale_depth",
                                                         "learning_rate"]):
        print(f"wrote {p}")


def run_mixture(args, cfg, data, out: Path) -> int:
    from ..tune import mixture
    from ..tune.study import open_study, run_worker

    checkpoint = mixture.stable_checkpoint(cfg, data, out, args.stable_from,
                                           log=print if args.worker_index is None else (lambda *_: None))
    base = mixture.trial_base(cfg, data, checkpoint)
    storage = study_location(args, out)
    s = cfg.tune.study
    worker = args.worker_index or 0
    study = open_study(storage, args.study_name, s, mixture.settings(base, data, checkpoint), worker=worker,
                       eval_every=base.train.eval_every)
    if args.worker_index is None:
        print(f"each trial: a decay branch of {base.train.max_steps} steps × {base.train.batch_tokens:,} tokens "
              f"from {checkpoint}; study '{args.study_name}' in {storage}; aiming for {s.n_trials} finished "
              f"trials ({s.sampler})")
    if args.workers > 1 and args.worker_index is None:
        args.output_resolved, args.storage_resolved, args.stable_from = str(out), storage, str(checkpoint)
        run_workers(args, args.workers)
    else:
        prefix = f"[worker {args.worker_index}] " if args.worker_index is not None else ""
        run_worker(study, mixture.make_objective(base, data, checkpoint, out), s, worker=worker,
                   log=lambda msg: print(prefix + msg, flush=True), describe=mixture.describe)
    if args.worker_index is None:
        mixture.finish(study, out)
    return 0


def report(args, out: Path) -> int:
    from ..tune.study import load_study

    storage = study_location(args, out)
    study = load_study(storage, args.study_name)
    experiment = study.user_attrs.get("settings", {}).get("experiment")
    if experiment == "mup":
        finish_mup(study, out)
    elif experiment == "mixture":
        from ..tune import mixture

        mixture.finish(study, out)
    else:
        raise XmodelError(f"study {args.study_name!r} was not made by xmodel tune (no settings stored)")
    return 0
