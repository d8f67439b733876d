"""`xmodel quickstart`: the whole Xmodel-2 recipe at nano scale, on the real data of the data root.

    tokenizer (Unigram, trained or reused) → packed shards → stable stage (WSD at max LR) → decay branch
    (exponential decay, 64 % SFT data) → WikiText-2 perplexity → report.md, plots, a loadable model

Every step is resumable: a second run reuses the tokenizer, the shards and finished stages.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import load_config
from ..data.root import data_root as resolve_data_root

QUICKSTART_DATA = Path(__file__).resolve().parent.parent / "configs" / "data" / "quickstart.yaml"


@dataclass
class QuickstartPlan:
    stable_steps: int = 240
    decay_steps: int = 60
    micro_batch: int = 8
    seq_len: int = 512
    max_lr: float = 0.01          # the report's optimum lies in 0.01–0.02
    warmup_steps: int = 20
    half_life: float = 20.0       # decay half-life T in steps (5000 at full scale)
    eval_windows: int = 40        # WikiText-2 windows of seq_len tokens

    @classmethod
    def fast(cls) -> "QuickstartPlan":
        """A few minutes in CI: the same pipeline with fewer steps."""
        return cls(stable_steps=40, decay_steps=12, warmup_steps=5, half_life=4.0, eval_windows=8)


def round_vocab(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


def run_quickstart(output: str | Path = "runs/quickstart", data_root: str | Path | None = None,
                   plan: QuickstartPlan | None = None, log=print) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..data.prepare import prepare_data
    from ..eval.scaling_law import WIKITEXT2_TEST, loss_by_position
    from ..tokenizer.train import train_tokenizer
    from .run import run_stage

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

    # 5. WikiText-2 perplexity of both models; the decay model is the run's model.
    log("5/5 WikiText-2 perplexity")
    t = time.perf_counter()
    text = (root / WIKITEXT2_TEST).read_text(encoding="utf-8")
    wikitext = {}
    for name, result in (("stable", stable), ("decay", decay)):
        model = AutoModelForCausalLM.from_pretrained(result.last_checkpoint / "model")
        losses, windows = loss_by_position(model, tokenizer, text, plan.seq_len, plan.eval_windows, progress=False)
        mean = float(losses.mean())
        wikitext[name] = {"loss": mean, "perplexity": float(2.718281828459045 ** mean), "windows": windows}
    timings["eval_s"] = time.perf_counter() - t
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(decay.last_checkpoint / "model", model_dir)
    timings["total_s"] = time.perf_counter() - t0

    summary = {
        "output": str(out), "model_dir": str(model_dir), "tokenizer_dir": str(tok_dir),
        "vocab_size": vocab, "plan": plan.__dict__,
        "stable": {"steps": stable.step, "heldout_loss": stable.eval_loss, "checkpoint": str(stable.last_checkpoint)},
        "decay": {"steps": decay.step, "heldout_loss": decay.eval_loss, "checkpoint": str(decay.last_checkpoint)},
        "wikitext2": wikitext, "timings": timings,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
