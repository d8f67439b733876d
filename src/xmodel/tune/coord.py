"""`xmodel tune coord-check`: the μP coordinate check (the method of microsoft/mup's `get_coord_data`).

For every width, under μP and under SP, a model is trained `tune.coord.steps` optimizer steps at one learning
rate, from `tune.coord.seeds` seeds, and the RMS of each activation is recorded in the forward pass of every
step (step 1 = the initial weights): the embedding output (× scale_emb), every block's attention and MLP
outputs, and the logits. Under a correct μP every curve is flat in width after the first steps; under SP the
updates make activations (the logits first) grow with width. A flat check is necessary, not sufficient, for
hyperparameters to transfer (microsoft/mup #22): `xmodel tune transfer` tests transfer itself.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from ..config import Config
from .data import TuneData
from .plots import _agg, save_figure
from .runs import fit_to_data
from .space import derive
from .widths import LABELS, PARAMETRISATIONS, at_width

GROUPS = ("embedding", "attention", "mlp", "logits")


def rms(x: torch.Tensor) -> float:
    return float(x.detach().float().pow(2).mean().sqrt())


class ActivationRecorder:
    """Forward hooks that keep, for each watched module, the RMS of its output in one step's forward pass and
    the RMS of the output's change since the first step (the data is the same batch at every step)."""

    def __init__(self):
        self.current: dict[str, list[float]] = defaultdict(list)
        self.delta: dict[str, list[float]] = defaultdict(list)
        self.first: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)
        self.step = 0
        self.handles = []

    def attach(self, model) -> None:
        scale_emb = model.config.scale_emb
        watch = {"embedding": (model.model.embed_tokens, scale_emb), "logits": (model.lm_head, 1.0)}
        for i, layer in enumerate(model.model.layers):
            watch[f"attention.{i}"] = (layer.self_attn, 1.0)
            watch[f"mlp.{i}"] = (layer.mlp, 1.0)
        for name, (module, factor) in watch.items():
            self.handles.append(module.register_forward_hook(self._hook(name, factor)))

    def _hook(self, name: str, factor: float):
        def hook(module, inputs, output):
            if not module.training:  # an evaluation, not the training forward
                return
            if isinstance(output, tuple):  # attention returns (output, weights), as Llama's does
                output = output[0]
            out = output.detach().float() * factor
            self.current[name].append(rms(out))
            k = self.calls[name]
            self.calls[name] += 1
            if self.step == 0:
                self.first[name].append(out.cpu())
            else:
                self.delta[name].append(rms(out - self.first[name][k].to(out.device)))
        return hook

    def take(self) -> dict[str, tuple[float, float]]:
        """activation → (RMS, RMS of the change since step 1) of the step that just ran."""
        out = {k: (sum(v) / len(v), sum(self.delta[k]) / len(self.delta[k]) if self.delta[k] else 0.0)
               for k, v in self.current.items() if v}
        self.current.clear()
        self.delta.clear()
        self.calls.clear()
        self.step += 1
        return out

    def detach(self) -> None:
        for h in self.handles:
            h.remove()


class FixedBatch:
    """The same sequences at every step (microsoft/mup's `fix_data`): the check measures how activations move
    under repeated updates, not how batches differ."""

    def __init__(self, source):
        self.source, self.seq_len = source, source.seq_len

    def batch(self, start: int, count: int):
        return self.source.batch(0, count)


def coord_config(cfg: Config, data: TuneData, width: int, parametrisation: str, seed: int) -> Config:
    c = cfg.tune.coord
    wcfg = at_width(fit_to_data(cfg, data), width, parametrisation, layers=c.layers, sp_init_std=c.sp_init_std)
    return derive(wcfg, {"train.max_steps": c.steps, "train.micro_batch_size": c.batch_sequences,
                         "train.batch_tokens": c.batch_sequences * data.seq_len, "train.batch_tokens_start": None,
                         "train.schedule.kind": "constant", "train.schedule.max_lr": c.lr,
                         "train.schedule.warmup_steps": 0, "train.seed": seed, "train.loss": "standard",
                         "train.grad_clip": 0.0, "train.precision": "fp32", "train.sample_prompts": [],
                         "train.log_every": 1, "train.peak_flops": 1e12})


def collect(cfg: Config, data: TuneData, out: Path, log=print) -> list[dict]:
    """One record per (parametrisation, width, seed, step, activation) with its RMS."""
    from tqdm.auto import tqdm

    from ..train.callbacks import Callback, MetricsWriter
    from ..train.trainer import train

    class Recording(Callback):
        """The recorder's hooks on the freshly built model; one record per activation after each step."""

        def __init__(self, key: dict):
            self.key, self.recorder = key, ActivationRecorder()

        def on_start(self, run):
            self.recorder.attach(run.built.module)

        def on_step(self, run, record):
            for name, (value, delta) in self.recorder.take().items():
                records.append({**self.key, "step": record["step"], "activation": name, "rms": value,
                                "delta_rms": delta})

        def close(self, run):
            self.recorder.detach()

    c = cfg.tune.coord
    records = []
    runs = [(p, w, s) for p in PARAMETRISATIONS for w in c.widths for s in range(c.seeds)]
    for p, w, s in tqdm(runs, desc="coord-check", unit="run", dynamic_ncols=True):
        run_cfg = coord_config(cfg, data, w, p, s)
        train(run_cfg.model, run_cfg.train, FixedBatch(data.stable(seed=s)), out / "runs" / f"{p}_w{w}_s{s}",
              callbacks=[Recording({"parametrisation": p, "width": w, "seed": s}), MetricsWriter()],
              log=lambda *_: None)
    return records


def group_of(activation: str) -> str:
    return activation.split(".")[0]


def curves(records: list[dict], key: str = "rms") -> dict:
    """(parametrisation, group, step) → {width: `key` averaged over seeds and the group's layers}."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if key == "delta_rms" and r["step"] == 1:
            continue  # no change yet at the first step
        acc[(r["parametrisation"], group_of(r["activation"]), r["step"])][r["width"]].append(r[key])
    return {k: {w: sum(v) / len(v) for w, v in sorted(ws.items())} for k, ws in acc.items()}


def width_slope(by_width: dict[int, float]) -> float:
    """Least-squares slope of log RMS against log width (0 = flat, 0.5 = grows like √width, 1 = like width)."""
    xs = [math.log(w) for w in by_width]
    ys = [math.log(max(v, 1e-30)) for v in by_width.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-12, sum((x - mx) ** 2 for x in xs))


def summarise(records: list[dict]) -> dict:
    """At the last step, per parametrisation and activation group, for the RMS and for the RMS of the change
    since step 1: largest/smallest over widths, and the slope in width."""
    last = max(r["step"] for r in records)
    out: dict = {"step": last}
    for key in ("rms", "delta_rms"):
        cv = curves(records, key)
        groups = {}
        for p in PARAMETRISATIONS:
            for g in GROUPS:
                by_width = cv.get((p, g, last))
                if by_width and min(by_width.values()) > 0:
                    groups[f"{p}.{g}"] = {"ratio": max(by_width.values()) / min(by_width.values()),
                                          "slope": width_slope(by_width), "by_width": by_width}
        out[key] = groups
    return out


def plot(records: list[dict], path: Path, key: str = "rms") -> Path:
    """A grid like microsoft/mup's: rows μP and SP, one column per activation group, RMS (or RMS of the change
    since step 1) against width with one line per step."""
    plt = _agg()
    cv = curves(records, key)
    steps = sorted({r["step"] for r in records if key == "rms" or r["step"] > 1})
    fig, axes = plt.subplots(2, len(GROUPS), figsize=(4 * len(GROUPS), 7), sharex=True)
    cmap = plt.get_cmap("viridis")
    for row, p in enumerate(PARAMETRISATIONS):
        for col, g in enumerate(GROUPS):
            ax = axes[row][col]
            for i, t in enumerate(steps):
                by_width = cv.get((p, g, t))
                if by_width:
                    ax.plot(list(by_width), list(by_width.values()), "o-", ms=3,
                            color=cmap(i / max(1, len(steps) - 1)), label=f"step {t}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{LABELS[p]}: {g}")
            ax.grid(alpha=0.3, which="both")
            if row == 1:
                ax.set_xlabel("width (hidden size)")
            if col == 0:
                ax.set_ylabel("activation RMS" if key == "rms" else "RMS of change since step 1")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("coordinate check: " + ("activation RMS" if key == "rms" else "RMS of the activations' change since "
                                         "initialisation") + " vs width over the first optimizer steps")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def run_coord_check(cfg: Config, data: TuneData, out: Path) -> int:
    c = cfg.tune.coord
    print(f"coord check: widths {c.widths}, {c.steps} steps at lr {c.lr:g}, {c.seeds} seeds, "
          f"{c.layers or cfg.model.num_hidden_layers} layers, on {data.description}")
    records = collect(cfg, data, out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "coord.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(out / "coord.jsonl")
    summary = summarise(records)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for line in summary_lines(summary, c.widths):
        print(line)
    print(f"wrote {plot(records, out / 'coord_check.png')}")
    print(f"wrote {plot(records, out / 'coord_check_delta.png', key='delta_rms')}")
    return 0


def summary_lines(summary: dict, widths: list[int]) -> list[str]:
    lines = [f"at step {summary['step']}: largest/smallest value over widths {min(widths)}–{max(widths)}, and the "
             f"slope s of value ∝ width^s",
             f"{'':<12}{'activation RMS':^40}{'RMS of change since step 1':^40}",
             f"{'activation':<12}" + f"{'μP ratio':>10}{'μP slope':>10}{'SP ratio':>10}{'SP slope':>10}" * 2]
    for g in GROUPS:
        row = f"{g:<12}"
        for key in ("rms", "delta_rms"):
            for p in PARAMETRISATIONS:
                v = summary[key].get(f"{p}.{g}")
                row += f"{v['ratio']:>10.2f}{v['slope']:>+10.2f}" if v else f"{'–':>10}{'–':>10}"
        lines.append(row)
    return lines
