"""The training loop, and `train`, which builds what it needs and runs it.

    result = train(cfg.model, cfg.train, data, run_dir)                                    # stable stage
    result = train(cfg.model, cfg.train, decay_data, branch_dir,
                   start=Start(stage="decay", branch_from=ckpt_path))                       # a decay branch

Building the model and optimizer (`build`), deciding where to start (`start`), one optimizer step (`step`)
and everything around the steps (`callbacks`: held-out loss, checkpoints, samples, metrics, progress) live in
their own modules; the loop below only walks the steps. It reads figures from the device only on the steps it
logs, and reads the next step's batch while the current one computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.batches import BatchSource
from ..errors import XmodelError
from ..model import XmodelConfig
from ..model.stats import model_stats
from ..tokenizer.loading import check_vocab_fits
from .batching import BatchPlan
from .build import Built, build
from .callbacks import (Callback, Checkpointing, HeldoutLoss, MetricsWriter, ProgressBar, SampleGenerations,
                        Throughput)
from .config import TrainConfig
from .distributed import DistEnv, init_distributed
from .metrics import peak_flops_per_device
from .optimizers import param_groups
from .prefetch import Prefetcher, pin_batches
from .schedule import lr_at
from .start import Start, last_step, resolve_start
from .state import TrainState
from .step import StepResult, train_step


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_checkpoint: Path | None = None
    losses: list[float] = field(default_factory=list)   # the loss of every logged step
    eval_loss: float | None = None
    stopped_early: str | None = None
    precision: str | None = None                        # what the passes computed in ("fp32" / "bf16")


@dataclass
class Run:
    """What callbacks see: the built model and optimizer, the state as it moves, the settings, the result."""

    built: Built
    state: TrainState
    train: TrainConfig
    run_dir: Path
    last_step: int
    result: TrainResult
    log: object = print
    # Non-finite (skipped) steps not yet read from the device: in total, and how many in a row just now.
    skipped: torch.Tensor = None
    skipped_in_a_row: torch.Tensor = None

    @property
    def is_main(self) -> bool:
        return self.built.env.is_main

    def read_counters(self, figures: list[torch.Tensor] = ()) -> list[float]:
        """Read `figures` and the skipped-step counters from the device in one go (a host sync), fold the
        skipped steps into the state; returns the figures' values, then (new skipped, skipped in a row)."""
        *values, new, in_a_row = torch.stack([*(f.float() for f in figures), self.skipped,
                                              self.skipped_in_a_row]).tolist()
        self.state.bad_steps_total += int(new)
        self.skipped.zero_()
        return [*values, int(new), int(in_a_row)]


def log_step(run: Run, out: StepResult, record: dict) -> None:
    """The figures of a logged step: the one host sync of the step."""
    loss, grad_norm, new, in_a_row = run.read_counters([out.loss, out.grad_norm])
    record.update(loss=loss, grad_norm=grad_norm)
    run.result.losses.append(loss)
    if new:
        record["skipped_steps"] = new
        run.log(f"step {record['step']}: {new} non-finite step(s) skipped since the last log "
                f"({in_a_row} in a row)")
    if in_a_row >= run.train.max_bad_steps:
        run.result.stopped_early = (f"{in_a_row} consecutive non-finite steps at step {record['step']}; "
                                    f"stopped with the last valid weights")


def train_loop(run: Run, data: BatchSource, plan: BatchPlan, callbacks: list[Callback]) -> TrainResult:
    state, t, built = run.state, run.train, run.built
    run.skipped = torch.zeros((), device=built.device)
    run.skipped_in_a_row = torch.zeros((), device=built.device)
    batches = Prefetcher(data, plan, built.env.rank, pin=pin_batches(built.device))
    try:
        for cb in callbacks:
            cb.on_start(run)
        built.model.train()
        first_step = state.step + 1  # logged too: the loss a run (or a resumed run) starts from
        if state.step < run.last_step:
            batches.request(state.step, state.data_position)
        while state.step < run.last_step and run.result.stopped_early is None:
            batch = batches.take()
            if state.step + 1 < run.last_step:  # read the next batch while this one computes
                batches.request(state.step + 1, state.data_position + batch.sequences)
            lr = lr_at(state.step, state.schedule)
            for group in param_groups(built.optimizers):
                group["lr"] = lr * group["lr_scale"]
            out = train_step(built, batch.micro_batches, batch.local_targets, t.grad_clip,
                             chunked_loss=t.loss == "chunked")
            # A skipped step still counts and passes over its batch: the schedule and the data move on.
            run.skipped += out.skipped
            run.skipped_in_a_row.add_(out.skipped).mul_(out.skipped)
            state.step += 1
            state.data_position += batch.sequences
            state.tokens += batch.sequences * plan.seq_len
            record = {"step": state.step, "lr": lr, "batch_sequences": batch.sequences, "tokens": state.tokens}
            if state.step % t.log_every == 0 or state.step in (first_step, run.last_step):
                log_step(run, out, record)
            for cb in callbacks:
                cb.on_step(run, record)
        final = {"step": state.step}
        for cb in callbacks:
            cb.on_end(run, final)
    finally:
        batches.close()
        for cb in callbacks:
            cb.close(run)
    run.result.step = state.step
    if run.result.stopped_early:
        run.log(run.result.stopped_early)
    return run.result


def standard_callbacks(train: TrainConfig, model_cfg: XmodelConfig, seq_len: int, built: Built, *,
                       heldout: BatchSource | None = None, tokenizer=None, run_record: dict | None = None,
                       checkpoints: bool = True, progress: bool = True) -> list[Callback]:
    """What `xmodel train` runs around the steps, in order: throughput, held-out loss, samples, metrics,
    checkpoints, progress bar."""
    peak = train.peak_flops or peak_flops_per_device(built.device, built.amp_dtype or torch.float32)
    callbacks: list[Callback] = [Throughput(model_stats(model_cfg, seq_len).flops_per_token_train, peak)]
    if heldout is not None:
        callbacks.append(HeldoutLoss(heldout, train.eval_every, train.eval_sequences))
    if tokenizer is not None and checkpoints:
        callbacks.append(SampleGenerations(tokenizer, train.sample_prompts, train.sample_tokens, train.save_every))
    callbacks.append(MetricsWriter())
    if checkpoints:
        callbacks.append(Checkpointing(run_record, tokenizer))
    if progress:
        callbacks.append(ProgressBar())
    return callbacks


def batch_plan(train: TrainConfig, seq_len: int, world_size: int) -> BatchPlan:
    plan = BatchPlan(seq_len=seq_len, micro_batch=train.micro_batch_size, world_size=world_size,
                     end_tokens=train.batch_tokens, start_tokens=train.batch_tokens_start,
                     ramp_steps=train.batch_ramp_steps, ramp=train.batch_ramp)
    try:
        plan.validate()
    except ValueError as e:
        raise XmodelError(f"train.{e}") from None
    return plan


def train(model_cfg: XmodelConfig, train_cfg: TrainConfig, data: BatchSource, run_dir: str | Path, *,
          start: Start = Start(), heldout: BatchSource | None = None, tokenizer=None,
          callbacks: list[Callback] | None = None, extra_callbacks: list[Callback] = (),
          run_record: dict | None = None, env: DistEnv | None = None, log=print,
          progress: bool = True) -> TrainResult:
    """Train a model of `model_cfg` on `data` into `run_dir`.

    `callbacks` replaces the standard ones (`standard_callbacks`); `extra_callbacks` run before them (e.g. the
    wind tunnel's evaluations, which add to a step's record before it is written). `run_record` is what the
    run's config.json and every checkpoint record about the run (the whole config, the mixture trained)."""
    run_dir = Path(run_dir)
    env = env or init_distributed(train_cfg.device)
    say = log if env.is_main else (lambda *_: None)
    if tokenizer is not None:
        check_vocab_fits(len(tokenizer), model_cfg.vocab_size, model="model.vocab_size")
    built = build(model_cfg, train_cfg, env)
    say(str(built.precision))
    plan = batch_plan(train_cfg, data.seq_len, env.world_size)
    state = resolve_start(start, run_dir, built, train_cfg, plan, log=say)
    if env.is_main and run_record is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        # config.json also says what this process computed in, and why (a resumed run: the latest process)
        write_run_record(run_dir, {**run_record, "changes": state.changes, "precision": built.precision.to_dict()})
    if callbacks is None:
        callbacks = standard_callbacks(train_cfg, model_cfg, data.seq_len, built, heldout=heldout,
                                       tokenizer=tokenizer, run_record=run_record, progress=progress)
    run = Run(built=built, state=state, train=train_cfg, run_dir=run_dir, last_step=last_step(state, train_cfg),
              result=TrainResult(run_dir=run_dir, step=state.step, precision=built.precision.name), log=say)
    return train_loop(run, data, plan, [*extra_callbacks, *callbacks])


def write_run_record(run_dir: Path, record: dict) -> None:
    """RUN/config.json, replaced atomically (a killed run never leaves half a file)."""
    import json

    tmp = run_dir / "config.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(run_dir / "config.json")
