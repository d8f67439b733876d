"""`xmodel quickstart`: the whole Xmodel-2 recipe at nano scale, on the real data of the data root.

    tokenizer (Unigram, trained or reused) → packed shards → stable stage (WSD at max LR) → decay branch
    (exponential decay, 64 % SFT data) → WikiText-2 perplexity → report.md, plots, a loadable model

Every step is resumable: a second run reuses the tokenizer, the shards and finished stages.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import load_config
from ..data.root import data_root as resolve_data_root

QUICKSTART_DATA = Path(__file__).resolve().parent.parent / "configs" / "data" / "quickstart.yaml"


@dataclass
class QuickstartPlan:
    stable_steps: int = 160
    decay_steps: int = 40
    micro_batch: int = 8
    seq_len: int = 512
    max_lr: float = 0.01          # the report's optimum lies in 0.01–0.02
    warmup_steps: int = 20
    half_life: float = 20.0       # decay half-life T in steps (5000 at full scale)
    eval_windows: int = 40        # WikiText-2 windows of seq_len tokens
    eval_limit: int = 50          # documents per commonsense task for the quick benchmark pass (0 = skip)

    @classmethod
    def fast(cls) -> "QuickstartPlan":
        """A few minutes in CI: the same pipeline with fewer steps."""
        return cls(stable_steps=24, decay_steps=8, warmup_steps=4, half_life=4.0, eval_windows=4, eval_limit=5)


def round_vocab(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


def run_quickstart(output: str | Path = "runs/quickstart", data_root: str | Path | None = None,
                   plan: QuickstartPlan | None = None, log=print) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..data.prepare import prepare_data
    from ..eval.scaling_law import WIKITEXT2_TEST, loss_by_position
    from ..tokenizer.train import train_tokenizer
    from ..data.mixture import build_sampler
    from ..data.heldout import HeldoutSource
    from ..train.callbacks import sample_generations
    from ..train.metrics import plot_run
    from ..train.run import run_stage
    from ..train.step import evaluate_loss

    plan = plan or QuickstartPlan()
    out = Path(output)
    root = resolve_data_root(data_root)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()

    # 1. Tokenizer (reused when already trained with the same settings).
    base = load_config("nano", yaml_path=QUICKSTART_DATA, overrides={"data.seq_len": plan.seq_len})
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        log("1/5 training the Unigram tokenizer")
        train_tokenizer(base.data, tok_dir, root)
    else:
        log(f"1/5 reusing the tokenizer in {tok_dir}")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    timings["tokenizer_s"] = time.perf_counter() - t0

    # 2. Packed shards (idempotent).
    log("2/5 preparing packed shards")
    t = time.perf_counter()
    prepared = out / "data"
    prepare_data(base.data, tok_dir, prepared, root, log=log)
    timings["prepare_s"] = time.perf_counter() - t

    vocab = round_vocab(len(tokenizer))
    overrides = {
        "data.seq_len": plan.seq_len, "data.tokenizer.path": str(tok_dir),
        "model.vocab_size": vocab, "model.max_position_embeddings": plan.seq_len,
        "model.bos_token_id": tokenizer.bos_token_id, "model.eos_token_id": tokenizer.eos_token_id,
        "model.pad_token_id": tokenizer.pad_token_id,
        "train.micro_batch_size": plan.micro_batch, "train.batch_tokens": plan.micro_batch * plan.seq_len,
        "train.schedule.max_lr": plan.max_lr, "train.schedule.warmup_steps": plan.warmup_steps,
        "train.schedule.half_life": plan.half_life, "train.log_every": 5,
        "train.eval_every": max(10, plan.stable_steps // 6), "train.eval_sequences": 32,
        "train.save_every": plan.stable_steps, "train.keep_last": 1, "train.sample_tokens": 24,
    }

    # 3. Stable stage.
    log(f"3/5 stable stage: {plan.stable_steps} steps of {plan.micro_batch * plan.seq_len} tokens")
    t = time.perf_counter()
    stable_cfg = load_config("nano", yaml_path=QUICKSTART_DATA, overrides={**overrides,
                                                                          "train.max_steps": plan.stable_steps})
    stable = run_stage(stable_cfg, prepared, tok_dir, out / "stable", stage="stable", log=log)
    timings["stable_s"] = time.perf_counter() - t

    # 4. Decay branch from the stable run's last checkpoint.
    log(f"4/5 decay branch: {plan.decay_steps} steps, SFT share {stable_cfg.data.decay.sft_share:.0%}")
    t = time.perf_counter()
    decay_cfg = load_config("nano", yaml_path=QUICKSTART_DATA, overrides={
        **overrides, "train.max_steps": plan.decay_steps, "train.eval_every": max(5, plan.decay_steps // 4),
        "train.save_every": plan.decay_steps})
    decay = run_stage(decay_cfg, prepared, tok_dir, out / "decay", stage="decay",
                      branch_from=stable.last_checkpoint, log=log)
    timings["decay_s"] = time.perf_counter() - t

    # 5. Both models on the same yardsticks: the held-out sets of both mixtures, and WikiText-2. At nano scale
    # the decay branch's SFT share moves the model away from the stable mixture about as much as the annealing
    # helps it there, so the stable-mixture loss alone can go either way; all three are reported.
    log("5/5 held-out loss and WikiText-2 perplexity of the stable and decay models")
    t = time.perf_counter()
    text = (root / WIKITEXT2_TEST).read_text(encoding="utf-8")
    heldout_sets = {stage: HeldoutSource(build_sampler(prepared, cfg.data, stage=stage))
                    for stage, cfg in (("stable", stable_cfg), ("decay", decay_cfg))}
    wikitext, heldout_loss = {}, {}
    for name, result in (("stable", stable), ("decay", decay)):
        model = AutoModelForCausalLM.from_pretrained(result.last_checkpoint / "model")
        heldout_loss[name] = {stage: evaluate_loss(model, held, min(len(held), 64), plan.micro_batch,
                                                   torch.device("cpu"), None)
                              for stage, held in heldout_sets.items()}
        losses, windows = loss_by_position(model, tokenizer, text, plan.seq_len, plan.eval_windows, progress=False)
        mean = float(losses.mean())
        wikitext[name] = {"loss": mean, "perplexity": math.exp(mean), "windows": windows}
    samples = sample_generations(model, tokenizer, decay_cfg.train.sample_prompts, 32, torch.device("cpu"))
    timings["eval_s"] = time.perf_counter() - t
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(decay.last_checkpoint / "model", model_dir)

    summary = {
        "output": str(out), "model_dir": str(model_dir), "tokenizer_dir": str(tok_dir),
        "vocab_size": vocab, "plan": plan.__dict__, "sft_share": decay_cfg.data.decay.sft_share,
        **{name: {"steps": result.step, "stable_heldout_loss": heldout_loss[name]["stable"],
                  "decay_heldout_loss": heldout_loss[name]["decay"], "checkpoint": str(result.last_checkpoint)}
           for name, result in (("stable", stable), ("decay", decay))},
        "wikitext2": wikitext, "samples": samples, "timings": timings,
    }
    # A quick benchmark pass (few documents per task) through the same harness as `xmodel eval`.
    if plan.eval_limit:
        log(f"evaluating the final model on the commonsense suite (--limit {plan.eval_limit})")
        t = time.perf_counter()
        summary["benchmarks"] = quick_benchmarks(model_dir, out / "eval", root, plan.eval_limit)
        timings["benchmarks_s"] = time.perf_counter() - t
    plot_run(out / "stable", {"decay": out / "decay"}, out_dir=out / "plots", label="stable")
    timings["total_s"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_report(summary, out)
    return summary


def quick_benchmarks(model_dir: Path, out_dir: Path, root: Path, limit: int) -> dict:
    """`xmodel eval MODEL --suite commonsense --limit N`, results.json in `out_dir`; returns {task: value}."""
    import sys

    from ..errors import XmodelError
    from ..eval.job import EvalJob, run_eval
    from ..eval.run import EvalSettings

    try:
        run_eval(EvalJob(model_dir, output=out_dir, suites=("commonsense",), data_root=root,
                         settings=EvalSettings(limit=limit, batch_size=16, device="auto")))
    except (XmodelError, OSError, ValueError) as e:  # as `xmodel eval` would: one line; the recipe goes on
        print(f"xmodel eval: error: {e}".splitlines()[0], file=sys.stderr)
        return {}
    from ..eval.results import RESULTS_FILE, load_results

    res = load_results(out_dir / RESULTS_FILE)
    return {name: row["value"] for name, row in res["benchmarks"].items()}


def write_report(summary: dict, out: Path) -> Path:
    """report.md and report.html of the run, through the same blocks as `xmodel report`."""
    from ..eval.report import Heading, Image, Para, Table, build_report, find_results, render_html, render_markdown

    w = summary["wikitext2"]
    t = summary["timings"]
    blocks = [
        Heading(1, "Xmodel quickstart"),
        Para(f"The Xmodel-2 recipe at nano scale on the data root: a {summary['vocab_size']:,}-entry Unigram "
             f"tokenizer, packed shards, a stable stage at constant LR, then a decay branch with "
             f"{summary['sft_share']:.0%} SFT data and exponential decay (half-life "
             f"{summary['plan']['half_life']:g} steps). Total time {t['total_s'] / 60:.1f} min."),
        Heading(2, "Training"),
        Table(["stage", "steps", "held-out loss (stable mixture)", "held-out loss (decay mixture)",
               "WikiText-2 loss", "WikiText-2 perplexity"],
              [[name, str(summary[name]["steps"]), f"{summary[name]['stable_heldout_loss']:.4f}",
                f"{summary[name]['decay_heldout_loss']:.4f}", f"{w[name]['loss']:.4f}", f"{w[name]['perplexity']:.1f}"]
               for name in ("stable", "decay")],
              caption=f"WikiText-2 test: {w['decay']['windows']} windows of {summary['plan']['seq_len']} tokens; "
                      "held-out: each mixture's held-out sequences (its sources in turn), the same sets for both "
                      "models"),
        Image("plots/loss.png", "training and held-out loss"),
        Image("plots/lr.png", "learning rate"),
        Table(["step", "seconds"], [[k.removesuffix("_s"), f"{v:.0f}"] for k, v in t.items()],
              caption="wall time per step of the pipeline"),
        Heading(2, "Samples (greedy, final model)"),
    ]
    for row in summary.get("samples", []):
        blocks.append(Para(f"`{row['prompt']}` → {row['completion']!r}"))
    results = find_results([str(out / "eval")]) if (out / "eval").is_dir() else []
    if results:
        blocks.append(Heading(2, "Benchmarks"))
        blocks.extend(build_report(results, out)[1:])
    blocks.append(Para(f"Model: `{summary['model_dir']}` (AutoModelForCausalLM / AutoTokenizer load it after "
                       "`import xmodel`)."))
    md = out / "report.md"
    md.write_text(render_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(render_html(blocks, "Xmodel quickstart"), encoding="utf-8")
    return md
