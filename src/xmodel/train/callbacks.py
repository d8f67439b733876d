"""What happens around the optimizer steps, as callbacks the loop calls in order.

    class Callback:
        on_start(run)            # once, weights in place and the state resolved
        on_step(run, record)     # after every optimizer step; `record` is that step's metrics, to add to
        on_end(run, record)      # once after the last step; `record` = {"step": last step}, to add to
        close(run)               # always, also when a callback or the loop raised

`record` carries step, lr, batch_sequences and tokens on every step; loss, grad_norm (and skipped_steps) on
the steps the loop logs, which are the only steps it reads figures from the device. Callbacks run in list
order, so one that adds a figure (held-out loss) comes before one that writes records (metrics).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.batches import BatchSource
from . import checkpoint as ckpt
from .metrics import MetricsLogger
from .step import evaluate_loss

if TYPE_CHECKING:
    from .trainer import Run


class Callback:
    def on_start(self, run: Run) -> None:
        pass

    def on_step(self, run: Run, record: dict) -> None:
        pass

    def on_end(self, run: Run, record: dict) -> None:
        pass

    def close(self, run: Run) -> None:
        pass


class HeldoutLoss(Callback):
    """Mean token loss on the first `sequences` of a held-out source every `every` steps (0 = at the end
    only) and after the last step; the last value becomes the run's `eval_loss`."""

    def __init__(self, source: BatchSource, every: int, sequences: int):
        self.source, self.every, self.sequences = source, every, sequences
        self.last_step: int | None = None

    def evaluate(self, run: Run) -> float:
        count = min(self.sequences, len(self.source)) if hasattr(self.source, "__len__") else self.sequences
        value = evaluate_loss(run.built.model, self.source, count, run.train.micro_batch_size, run.built.device,
                              run.built.amp_dtype)
        self.last_step, run.result.eval_loss = run.state.step, value
        return value

    def on_step(self, run, record):
        if self.every and run.state.step % self.every == 0:
            record["eval_loss"] = self.evaluate(run)

    def on_end(self, run, record):
        if self.last_step != run.state.step:
            record["eval_loss"] = self.evaluate(run)


class Checkpointing(Callback):
    """A checkpoint every `train.save_every` steps and after the last step (see `checkpoint.py`); the trainer
    state and `run_record` (the run's config) go with it."""

    def __init__(self, run_record: dict | None = None, tokenizer=None):
        self.run_record, self.tokenizer = run_record or {}, tokenizer

    def save(self, run: Run) -> None:
        run.read_counters()
        t = run.train
        trainer_state = {"state": run.state.to_dict(), "config": self.run_record}
        run.result.last_checkpoint = ckpt.save_checkpoint(run.run_dir, run.state.step, run.built.model,
                                                          run.built.optimizers, trainer_state, self.tokenizer,
                                                          t.keep_last, t.keep_every, log=run.log)

    def on_step(self, run, record):
        if run.state.step % run.train.save_every == 0 and run.state.step < run.last_step:
            self.save(run)

    def on_end(self, run, record):
        existing = dict(ckpt.list_checkpoints(run.run_dir)).get(run.state.step)
        if existing is not None and run.state.step == run.last_step and ckpt.verify(existing) is None:
            run.result.last_checkpoint = existing  # a finished run resumed: nothing new to save
        else:
            self.save(run)


class SampleGenerations(Callback):
    """Greedy completions of a few prompts every `every` steps and at the end, appended to RUN/samples.jsonl
    (main rank; not under FSDP, where generating would need every rank)."""

    def __init__(self, tokenizer, prompts: list[str], max_new_tokens: int, every: int):
        self.tokenizer, self.prompts, self.max_new_tokens, self.every = tokenizer, prompts, max_new_tokens, every

    def active(self, run: Run) -> bool:
        return bool(self.prompts) and run.is_main and run.built.parallel != "fsdp"

    def write(self, run: Run) -> None:
        samples = sample_generations(run.built.module, self.tokenizer, self.prompts, self.max_new_tokens,
                                     run.built.device)
        with open(Path(run.run_dir) / "samples.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": run.state.step, "samples": samples}, ensure_ascii=False) + "\n")

    def on_step(self, run, record):
        if self.active(run) and self.every and run.state.step % self.every == 0:
            self.write(run)

    def on_end(self, run, record):
        if self.active(run) and not (self.every and run.state.step % self.every == 0):
            self.write(run)


def sample_generations(model, tokenizer, prompts: list[str], max_new_tokens: int, device) -> list[dict]:
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=model.config.pad_token_id)
            out.append({"prompt": prompt, "completion": tokenizer.decode(gen[0, ids.shape[1]:],
                                                                         skip_special_tokens=True)})
    model.train(was_training)
    return out


class Throughput(Callback):
    """Tokens/s and MFU over the steps since the previous logged step, on logged steps. An MFU above 100 % can
    only mean the peak was measured low (another process on the CPU at the time): it is withheld, with a note
    in the log once, rather than printed."""

    def __init__(self, flops_per_token: float, peak_flops: float):
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.noted = False

    def on_start(self, run):
        self.t_last, self.tokens_last = time.perf_counter(), run.state.tokens

    def on_step(self, run, record):
        if "loss" not in record:
            return
        now = time.perf_counter()
        tok_s = (run.state.tokens - self.tokens_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.tokens_last = now, run.state.tokens
        mfu = tok_s * self.flops_per_token / (self.peak_flops * run.built.env.world_size)
        record.update(tokens_per_s=tok_s)
        if mfu <= 1.0:
            record.update(mfu=mfu)
        elif not self.noted:
            self.noted = True
            run.log(f"MFU withheld: {mfu:.0%} of a {self.peak_flops / 1e9:.0f} GFLOP/s peak means the peak was "
                    "measured low (a busy machine at the start); set train.peak_flops to the device's peak")


class MetricsWriter(Callback):
    """Logged records into RUN/metrics.jsonl and TensorBoard (main rank); on resume the lines after the
    resumed step are dropped first, so the file reads as one run."""

    def on_start(self, run):
        self.logger = MetricsLogger(run.run_dir, enabled=run.is_main, resume_step=run.state.step)

    def on_step(self, run, record):
        if "loss" in record or "eval_loss" in record:
            self.logger.log(record)

    def on_end(self, run, record):
        if len(record) > 1:
            self.logger.log(record)

    def close(self, run):
        if hasattr(self, "logger"):
            self.logger.close()


class ProgressBar(Callback):
    def on_start(self, run):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=run.last_step, initial=run.state.step, desc=run.state.stage, unit="step",
                        dynamic_ncols=True, disable=not run.is_main)

    def on_step(self, run, record):
        self.bar.update(1)
        if "loss" in record:
            shown = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}"}
            if "tokens_per_s" in record:
                shown["tok/s"] = f"{record['tokens_per_s']:.0f}"
            if "mfu" in record:
                shown["mfu"] = f"{record['mfu']:.1%}"
            self.bar.set_postfix(shown)

    def close(self, run):
        if hasattr(self, "bar"):
            self.bar.close()
