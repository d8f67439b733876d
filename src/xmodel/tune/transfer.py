"""`xmodel tune transfer`: μTransfer validation — does the best learning rate stay put as the model widens (or,
with `tune.transfer.axis: depth`, deepens)?

For each width of `tune.transfer.widths` (≥ 4, spanning ≥ 8×) and each learning rate of the log grid
`tune.transfer.lrs`, a model is trained `tune.transfer.tokens` tokens under μP and under standard
parametrisation, and its held-out loss recorded. μP should give one optimum for every width; under SP the
optimum moves (smaller for wider models). Results go to OUT/transfer.jsonl as each run ends, so an interrupted
sweep continues where it stopped; OUT/transfer.png draws loss against learning rate, one curve per width.

Across depth (`tune.transfer.depths`, ≥ 4 spanning ≥ 4×, at the config's width) the comparison is μP with its
residual branches scaled by scale_depth/√L ("mup") against μP without that scaling ("mup:unscaled-depth").

The optimum per width is the grid learning rate with the lowest loss, and a refined value from a parabola
through it and its two neighbours (in log learning rate). Drift = largest / smallest optimum across widths,
also counted in grid steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import Config
from .data import TuneData
from .plots import _agg, save_figure
from .runs import HeldoutObjective, budget_overrides, fit_to_data, run_budgeted
from .space import derive
from .widths import LABELS, at_width


def run_config(cfg: Config, data: TuneData, size: int, parametrisation: str, lr: float, seed: int) -> Config:
    """One run of the sweep: `size` is the width, or with `tune.transfer.axis: depth` the number of layers (at
    the config's width)."""
    t = cfg.tune.transfer
    width, layers = (size, t.layers) if t.axis == "width" else (cfg.model.hidden_size, size)
    wcfg = at_width(fit_to_data(cfg, data), width, parametrisation, layers=layers, sp_init_std=t.sp_init_std)
    over = budget_overrides(wcfg, t.tokens, 1, t.warmup_fraction, data.seq_len)
    over.update({"train.schedule.max_lr": lr, "train.seed": seed})
    return derive(wcfg, over)


def sizes_of(t) -> list[int]:
    return t.widths if t.axis == "width" else t.depths


def key(r: dict) -> tuple:
    axis = r.get("axis", "width")
    return r.get("optimizer", "adamw"), axis, r["parametrisation"], r[axis], float(f"{r['lr']:.6g}"), r["seed"]


def sweep(cfg: Config, data: TuneData, out: Path, log=print) -> list[dict]:
    """Every (parametrisation, width, lr, seed) run, skipping those already in OUT/transfer.jsonl."""
    from tqdm.auto import tqdm

    t = cfg.tune.transfer
    results_path = out / "transfer.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[key(r)] = r
    axis, opt = t.axis, cfg.train.optimizer  # a sweep under another optimizer or axis is a different sweep

    def record_key(p, size, lr, seed):
        return key({"optimizer": opt, "axis": axis, "parametrisation": p, axis: size, "lr": lr, "seed": seed})

    grid = [(p, w, lr, s) for p in t.parametrisations for w in sizes_of(t) for lr in t.lrs for s in range(t.seeds)]
    todo = [x for x in grid if record_key(*x) not in done]
    if done:
        log(f"{len(done)} runs already in {results_path}; {len(todo)} to go")
    out.mkdir(parents=True, exist_ok=True)
    for p, w, lr, s in tqdm(todo, desc="transfer", unit="run", dynamic_ncols=True):
        rcfg = run_config(cfg, data, w, p, lr, s)
        objective = HeldoutObjective(data, {"pretrain": 1.0}, sequences=rcfg.train.eval_sequences)
        outcome = run_budgeted(rcfg, data.stable(seed=s), out / "runs" / f"{p}_w{w}_lr{lr:.3g}_s{s}", objective,
                               log=lambda *_: None)
        r = {"optimizer": opt, "axis": axis, "parametrisation": p, axis: w, "lr": lr, "seed": s,
             "loss": outcome.objective if math.isfinite(outcome.objective) else None,
             "train_loss": outcome.result.losses[-1] if outcome.result.losses else None,
             "steps": outcome.result.step, "diverged": outcome.result.stopped_early is not None
             or not math.isfinite(outcome.objective)}
        with results_path.open("a") as f:  # one line per finished run: a crash loses at most the current run
            f.write(json.dumps(r) + "\n")
        done[key(r)] = r
    wanted = {record_key(*x) for x in grid}
    return [r for k, r in done.items() if k in wanted]


def loss_curves(results: list[dict]) -> dict:
    """(parametrisation, size) → {lr: mean held-out loss over seeds (None if any seed diverged)}."""
    acc: dict = {}
    for r in results:
        size = r[r.get("axis", "width")]
        acc.setdefault((r["parametrisation"], size), {}).setdefault(r["lr"], []).append(r["loss"])
    return {k: {lr: (None if any(v is None for v in vs) else sum(vs) / len(vs)) for lr, vs in sorted(d.items())}
            for k, d in acc.items()}


def optimum(curve: dict[float, float | None]) -> tuple[float | None, float | None]:
    """(grid argmin, refined optimum from a parabola in log2 lr through the argmin and its neighbours)."""
    points = [(lr, v) for lr, v in curve.items() if v is not None and math.isfinite(v)]
    if not points:
        return None, None
    lrs = sorted(curve)
    best_lr = min(points, key=lambda p: p[1])[0]
    i = lrs.index(best_lr)
    if 0 < i < len(lrs) - 1 and curve[lrs[i - 1]] is not None and curve[lrs[i + 1]] is not None:
        x = [math.log2(lrs[j]) for j in (i - 1, i, i + 1)]
        y = [curve[lrs[j]] for j in (i - 1, i, i + 1)]
        denom = (x[0] - x[1]) * (x[0] - x[2]) * (x[1] - x[2])
        a = (x[2] * (y[1] - y[0]) + x[1] * (y[0] - y[2]) + x[0] * (y[2] - y[1])) / denom
        b = (x[2] ** 2 * (y[0] - y[1]) + x[1] ** 2 * (y[2] - y[0]) + x[0] ** 2 * (y[1] - y[2])) / denom
        if a > 0:
            vertex = -b / (2 * a)
            return best_lr, 2 ** min(max(vertex, x[0]), x[2])
    return best_lr, best_lr


def analyse(results: list[dict], sizes: list[int], lrs: list[float],
            parametrisations: list[str] = ("mup", "sp")) -> dict:
    curves = loss_curves(results)
    step = _grid_step(lrs)
    out: dict = {"grid_factor": step, "parametrisations": {}}
    for p in parametrisations:
        per_size = {}
        for w in sizes:
            grid, refined = optimum(curves.get((p, w), {}))
            per_size[w] = {"grid": grid, "refined": refined}
        grid_opts = [v["grid"] for v in per_size.values() if v["grid"]]
        refined_opts = [v["refined"] for v in per_size.values() if v["refined"]]
        drift = max(grid_opts) / min(grid_opts) if grid_opts else None
        out["parametrisations"][p] = {
            "optimum": per_size, "drift": drift,
            "drift_steps": math.log(drift) / math.log(step) if drift else None,
            "refined_drift": max(refined_opts) / min(refined_opts) if refined_opts else None,
            # direction: does the optimum move down (larger → smaller lr)?
            "trend": _trend([(w, per_size[w]["refined"]) for w in sizes if per_size[w]["refined"]])}
    return out


def _grid_step(lrs: list[float]) -> float:
    s = sorted(lrs)
    ratios = [b / a for a, b in zip(s, s[1:])]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def _trend(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log optimum against log size (0 = no drift, −1 = optimum ∝ 1/size)."""
    if len(points) < 2:
        return None
    xs = [math.log(w) for w, _ in points]
    ys = [math.log(v) for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-12, sum((x - mx) ** 2 for x in xs))


def plot(results: list[dict], analysis: dict, sizes: list[int], path: Path, axis: str = "width") -> Path:
    plt = _agg()
    curves = loss_curves(results)
    names = list(analysis["parametrisations"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.6), sharey=True, squeeze=False)
    axes = axes[0]
    cmap = plt.get_cmap("plasma")
    for ax, p in zip(axes, names):
        for i, w in enumerate(sizes):
            curve = curves.get((p, w), {})
            pts = [(lr, v) for lr, v in curve.items() if v is not None]
            if not pts:
                continue
            color = cmap(i / max(1, len(sizes) - 1) * 0.85)
            ax.plot([lr for lr, _ in pts], [v for _, v in pts], "o-", ms=3, color=color, label=f"{axis} {w}")
            best = analysis["parametrisations"][p]["optimum"][w]["grid"]
            if best:
                ax.plot([best], [curve[best]], "*", ms=12, color=color, markeredgecolor="black")
        a = analysis["parametrisations"][p]
        drift = f"optimum drift {a['drift']:.2g}× ({a['drift_steps']:.1f} grid steps)" if a["drift"] else ""
        ax.set_title(f"{LABELS[p]}: {drift}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("held-out loss")
    axes[0].legend(fontsize=8)
    finite = [r["loss"] for r in results if r["loss"] is not None]
    if finite:  # diverged runs can reach huge losses: keep the interesting range readable
        lo = min(finite)
        axes[0].set_ylim(lo - 0.05 * abs(lo), min(max(finite), lo + 3.0) + 0.05)
    fig.suptitle(f"μTransfer: held-out loss vs learning rate at each {axis} (★ = best per {axis})")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def summary_lines(analysis: dict, sizes: list[int], axis: str = "width") -> list[str]:
    names = list(analysis["parametrisations"])
    cols = {p: max(16, len(LABELS[p]) + 10) for p in names}  # room for "μP unscaled-depth best lr"
    lines = [f"{axis:>8}" + "".join(f"{LABELS[p] + ' best lr':>{cols[p]}}{LABELS[p] + ' refined':>{cols[p]}}"
                                    for p in names)]
    for w in sizes:
        row = f"{w:>8}"
        for p in names:
            o = analysis["parametrisations"][p]["optimum"][w]
            row += f"{o['grid'] or float('nan'):>{cols[p]}.3g}{o['refined'] or float('nan'):>{cols[p]}.3g}"
        lines.append(row)
    for p in names:
        a = analysis["parametrisations"][p]
        if a["drift"]:
            lines.append(f"{LABELS[p]}: optimum drift {a['drift']:.3g}× across {axis}s {min(sizes)}–{max(sizes)} "
                         f"({a['drift_steps']:.1f} grid steps of {analysis['grid_factor']:.3g}×); refined drift "
                         f"{a['refined_drift']:.3g}×, trend optimum ∝ {axis}^{a['trend']:+.2f}")
    return lines


def run_transfer(cfg: Config, data: TuneData, out: Path) -> int:
    t = cfg.tune.transfer
    sizes = sizes_of(t)
    runs = len(t.parametrisations) * len(sizes) * len(t.lrs) * t.seeds
    print(f"μTransfer across {t.axis}: {t.axis}s {sizes}, learning rates {', '.join(f'{lr:.3g}' for lr in t.lrs)}, "
          f"{t.tokens:,} tokens per run, {', '.join(t.parametrisations)} with {cfg.train.optimizer}, {runs} runs, "
          f"on {data.description}")
    results = sweep(cfg, data, out)
    analysis = analyse(results, sizes, t.lrs, t.parametrisations)
    analysis["axis"] = t.axis
    tmp = out / "analysis.json.tmp"
    tmp.write_text(json.dumps(analysis, indent=1, default=str))
    tmp.replace(out / "analysis.json")
    for line in summary_lines(analysis, sizes, t.axis):
        print(line)
    print(f"wrote {plot(results, analysis, sizes, out / 'transfer.png', t.axis)}")
    return 0
