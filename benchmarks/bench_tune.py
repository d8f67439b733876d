"""Wind-tunnel throughput: wall time per nano μP trial, and trials/hour with 1 and with 2 worker processes
sharing one SQLite study (the 1-worker run is the baseline, measured in the same run).

Each configuration runs `xmodel tune mup` as a user would (pruning off, so every trial trains its whole budget)
on prepared data, then reads the trials' start/end times from the study. Prints seconds per trial, trials/hour,
the 2-worker / 1-worker throughput ratio and what a 300-trial study would take at that rate.

    python benchmarks/bench_tune.py --data runs/data [--tokens 65536] [--trials 4] [--workers 1 2]

--data: a directory written by `xmodel data prepare` (e.g. the quickstart data), or "synthetic".
Extra arguments are passed to `xmodel tune mup` (e.g. --train.precision fp32 --train.batch_tokens 8192).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna


def run(data: str, workers: int, trials: int, tokens: int, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "xmodel.cli.main", "tune", "mup", "--data", data, "--output", str(out),
           "--n-trials", str(trials), "--workers", str(workers), "--sampler", "tpe", "--tune.study.pruner", "none",
           "--tune.study.startup_trials", str(trials), "--tune.mup.tokens", str(tokens), "--tune.mup.evals", "1",
           *extra]
    if workers == 1:
        cmd += ["--threads", str(os.cpu_count() or 1)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name="mup", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    per_trial = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    span = (last - first).total_seconds()
    return {"workers": workers, "trials": len(done), "wall_s": wall, "trial_s": statistics.median(per_trial),
            "trials_per_hour": 3600 * len(done) / span, "steps": done[0].user_attrs.get("tokens", 0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/data")
    p.add_argument("--tokens", type=int, default=65536, help="training tokens per trial")
    p.add_argument("--trials", type=int, default=4, help="trials per configuration")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args, extra = p.parse_known_args()
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"nano μP trials of {args.tokens:,} tokens on {args.data}, {device}; extra: {' '.join(extra) or '-'}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            r = run(args.data, w, args.trials, args.tokens, extra, Path(tmp) / f"w{w}")
            results.append(r)
            print(f"{w} worker(s): {r['trials']} trials, median {r['trial_s']:.1f} s per trial, "
                  f"{r['trials_per_hour']:.1f} trials/hour (wall {r['wall_s']:.0f} s incl. start-up); "
                  f"300 trials ≈ {300 / r['trials_per_hour']:.1f} h")
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            print(f"throughput {r['workers']} workers / {base['workers']}: "
                  f"{r['trials_per_hour'] / base['trials_per_hour']:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
