"""The training loop: one function, readable top to bottom.

    result = train(cfg, data, run_dir)                                   # stable stage
    result = train(cfg, decay_data, branch_dir, branch_from=ckpt_path)   # a decay branch from any checkpoint

Each optimizer step takes the global batch at the sampler's current sequence position, splits it into
micro-batches (rank-major), accumulates the summed token losses divided by the global count of target tokens,
clips, and steps AdamW with μP groups whose learning rates follow the schedule. Bit-exact resume comes from
restoring model, optimizer, RNG and the sampler position; the schedule is a pure function of the step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from ..config import Config, config_to_dict
from ..errors import XmodelError
from ..model import XmodelForCausalLM, mup_param_groups
from ..model.stats import model_stats
from . import checkpoint as ckpt
from .batching import BatchPlan
from .distributed import DistEnv, all_reduce_sum, init_distributed, set_grad_sync, wrap_model
from .metrics import MetricsLogger
from .schedule import lr_at


class BatchSource(Protocol):
    """What the loop needs from the data pipeline: sequences by global position."""

    seq_len: int

    def batch(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """Sequences start … start+count−1 as input_ids and labels (−100 = no loss), both (count, seq_len)."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_checkpoint: Path | None
    losses: list[float] = field(default_factory=list)
    eval_loss: float | None = None
    stopped_early: str | None = None


# Matmul shapes (m, k, n) for the CPU peak; the fastest is the peak. A single 1024³ product ran at about half
# the speed of these on a 2-core Sapphire Rapids VM (344 against 700–780 GFLOP/s in bf16), which put the
# reported MFU above 100 %. Each is 4–6 GFLOP, so the measurement stays well under a second.
_CPU_PEAK_SHAPES = ((2048, 512, 2048), (2048, 768, 2048), (2048, 1024, 1024))


def peak_flops_per_device(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Dense peak for MFU: a table for known GPUs (bf16); on a CPU, measured — the fastest of a few matmul
    shapes, each at the median of `repeats` timings (single timings on a VM are off both ways, once by 2.5x)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40", 181e12),
                           ("A10", 125e12), ("4090", 165e12)):
            if key in name:
                return flops if dtype == torch.bfloat16 else flops / 2
        return 100e12
    best = 0.0
    for m, k, n in _CPU_PEAK_SHAPES:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # first call: allocation and the library's one-time setup
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            rates.append(2 * m * k * n / (time.perf_counter() - t0))
        best = max(best, statistics.median(rates))
    return best


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cpu" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def build_optimizer(model, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    t = cfg.train
    groups = mup_param_groups(ckpt.unwrap(model), lr=t.schedule.max_lr, weight_decay=t.weight_decay)
    # PyTorch's fused kernel does the whole update in one pass per tensor; on CPU it measured 5.3x faster than
    # foreach (0.079 s vs 0.419 s per step for tiny's 88M parameters), which on CPU loops over the tensors.
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=t.schedule.max_lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                             **kwargs)


def evaluate_loss(model, source: BatchSource, count: int, micro_batch: int, device, amp_dtype) -> float:
    """Mean token loss over the first `count` sequences of `source` (a held-out set)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    tokens = 0
    with torch.no_grad():
        for start in range(0, count, micro_batch):
            batch = source.batch(start, min(micro_batch, count - start))
            ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            n = int((labels[:, 1:] != -100).sum())
            with amp_context(device, amp_dtype):
                loss = model(input_ids=ids, labels=labels, return_logits=False, num_items_in_batch=n).loss
            total += loss.double().cpu() * n
            tokens += n
    model.train()
    return float(total / max(tokens, 1))


def amp_context(device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def sample_generations(model, tokenizer, prompts: list[str], max_new_tokens: int, device) -> list[dict]:
    model.eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=model.config.pad_token_id)
            out.append({"prompt": prompt, "completion": tokenizer.decode(gen[0, ids.shape[1]:],
                                                                         skip_special_tokens=True)})
    model.train()
    return out


def forward_backward(step_model, model, micro_batches: list[dict], items_per_rank: float, device, amp_dtype,
                     chunked_loss: bool = True) -> torch.Tensor:
    """Accumulate gradients over this rank's micro-batches. Each micro-batch's summed token loss is divided by
    `items_per_rank` (global target tokens / world size), so after the data-parallel gradient average the
    gradient is that of the mean token loss over the whole global batch. Returns the local summed loss."""
    loss_sum = torch.zeros((), device=device)
    last = len(micro_batches) - 1
    for j, b in enumerate(micro_batches):
        ids, labels = b["input_ids"].to(device), b["labels"].to(device)
        with set_grad_sync(model, j == last), amp_context(device, amp_dtype):
            out = step_model(input_ids=ids, labels=labels, return_logits=not chunked_loss,
                             num_items_in_batch=items_per_rank)
            out.loss.backward()
        loss_sum += out.loss.detach() * items_per_rank
    return loss_sum


def train(cfg: Config, data: BatchSource, run_dir: str | Path, *, heldout: BatchSource | None = None,
          tokenizer=None, resume: str = "auto", branch_from: str | Path | None = None,
          env: DistEnv | None = None, log=print, progress: bool = True,
          on_model: Callable[[torch.nn.Module], None] | None = None,
          on_step: Callable[[dict], None] | None = None, save_checkpoints: bool = True) -> TrainResult:
    """Train `cfg.model` on `data` into `run_dir` (see the module doc).

    Hooks for callers that run many short trainings (the wind tunnel): `on_model(model)` is called once with the
    unwrapped model after its weights are in place (fresh, resumed or branched), e.g. to register forward hooks;
    `on_step(record)` after each optimizer step with that step's metrics record, before it is written (it may add
    fields, e.g. its own held-out loss); an exception it raises (a pruned trial) ends training with the metrics
    files closed.
    `save_checkpoints=False` writes no checkpoint at all (throwaway runs).
    """
    t = cfg.train
    run_dir = Path(run_dir)
    env = env or init_distributed(t.device)
    is_main = env.is_main
    device = env.device
    amp_dtype = autocast_dtype(t.precision, device)
    say = log if is_main else (lambda *_: None)

    # ---- model, optimizer ------------------------------------------------------------------------------
    torch.manual_seed(t.seed)
    model = XmodelForCausalLM(cfg.model).to(device)
    if tokenizer is not None and len(tokenizer) > cfg.model.vocab_size:
        raise XmodelError(f"tokenizer has {len(tokenizer)} tokens but model.vocab_size is {cfg.model.vocab_size}")
    if t.activation_checkpointing:
        model.gradient_checkpointing_enable()
    parallel = t.parallel if t.parallel != "auto" else ("ddp" if env.world_size > 1 else "none")
    model = wrap_model(model, parallel, env)
    optimizer = build_optimizer(model, cfg, device)
    step_model = torch.compile(model) if t.compile else model

    plan = BatchPlan(seq_len=data.seq_len, micro_batch=t.micro_batch_size, world_size=env.world_size,
                     end_tokens=t.batch_tokens, start_tokens=t.batch_tokens_start, ramp_steps=t.batch_ramp_steps)
    try:
        plan.validate()
    except ValueError as e:
        raise XmodelError(f"train.{e}") from None

    # ---- where to start: fresh, resumed, or a decay branch ----------------------------------------------
    state = {"step": 0, "data_position": 0, "tokens": 0, "bad_steps_total": 0, "stage": "stable",
             "branch_from": None, "branch_start": 0}
    schedule = t.schedule
    resumed_from = None
    if resume not in ("none", "auto"):
        resumed_from = Path(resume)
    elif resume == "auto":
        resumed_from = ckpt.latest_valid(run_dir, log=say, set_aside=is_main)
    if resumed_from is not None:
        state.update(ckpt.load_checkpoint(resumed_from, model, optimizer)["state"])
        say(f"resumed from {resumed_from} at step {state['step']}")
    elif branch_from is not None:
        branch_from = Path(branch_from)
        stable_state = ckpt.load_checkpoint(branch_from, model, optimizer)["state"]
        if stable_state["stage"] != "stable":
            raise XmodelError(f"{branch_from}: a decay branch starts from a stable-stage checkpoint")
        state.update(step=stable_state["step"], data_position=0, tokens=stable_state["tokens"], stage="decay",
                     branch_from=str(branch_from), branch_start=stable_state["step"])
        say(f"decay branch from {branch_from} (step {state['step']})")
    if state["stage"] == "decay":
        if schedule.decay_start is None:  # the decay starts where the branch leaves the stable run
            schedule = dataclasses.replace(schedule, decay_start=state["branch_start"])
        last_step = state["branch_start"] + t.max_steps
    else:
        last_step = t.max_steps
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=1, default=str))
    metrics = MetricsLogger(run_dir, enabled=is_main, resume_step=state["step"])
    if on_model is not None:
        on_model(ckpt.unwrap(model))

    stats = model_stats(cfg.model, data.seq_len)
    peak = t.peak_flops or peak_flops_per_device(device, amp_dtype or torch.float32)
    result = TrainResult(run_dir=run_dir, step=state["step"], last_checkpoint=resumed_from)

    def trainer_state():
        return {"state": dict(state), "schedule": dataclasses.asdict(schedule), "config": config_to_dict(cfg)}

    def save():
        path = ckpt.save_checkpoint(run_dir, state["step"], model, optimizer, trainer_state(), tokenizer,
                                    t.keep_last, t.keep_every, log=say)
        result.last_checkpoint = path
        if tokenizer is not None and is_main and parallel != "fsdp" and t.sample_prompts:
            samples = sample_generations(ckpt.unwrap(model), tokenizer, t.sample_prompts, t.sample_tokens, device)
            (path.parent.parent / "samples.jsonl").open("a").write(
                json.dumps({"step": state["step"], "samples": samples}, ensure_ascii=False) + "\n")
        return path

    # ---- the loop ------------------------------------------------------------------------------------
    bar = None
    if is_main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=last_step, initial=state["step"], desc=state["stage"], unit="step", dynamic_ncols=True)
    model.train()
    bad_in_a_row = 0
    record: dict = {}
    t_last, tokens_last = time.perf_counter(), state["tokens"]  # throughput over the steps since the last log
    try:
        while state["step"] < last_step:
            step = state["step"]
            lr = lr_at(step, schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            n_seqs = plan.sequences_at(step)
            accumulation = n_seqs // plan.unit
            # This rank's micro-batches of the global batch [position, position + n_seqs).
            micro = [data.batch(state["data_position"] + (j * env.world_size + env.rank) * t.micro_batch_size,
                                t.micro_batch_size) for j in range(accumulation)]
            local_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
            global_targets = int(all_reduce_sum(torch.tensor(float(local_targets), device=device)).item())
            loss_sum = forward_backward(step_model, model, micro, global_targets / env.world_size, device,
                                        amp_dtype, chunked_loss=t.loss == "chunked")
            loss = float(all_reduce_sum(loss_sum) / global_targets)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                       t.grad_clip if t.grad_clip > 0 else math.inf)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                bad_in_a_row += 1
                state["bad_steps_total"] += 1
                say(f"step {step}: non-finite loss/grad ({loss}, {grad_norm}); step skipped "
                    f"({bad_in_a_row} in a row)")
                if bad_in_a_row >= t.max_bad_steps:
                    result.stopped_early = (f"{bad_in_a_row} consecutive non-finite steps at step {step}; "
                                            f"stopped with the last valid weights")
                    break
                state["data_position"] += n_seqs  # move past the bad data rather than retrying it forever
                continue
            bad_in_a_row = 0
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["data_position"] += n_seqs
            state["tokens"] += n_seqs * data.seq_len
            result.losses.append(loss)

            record = {"step": state["step"], "loss": loss, "lr": lr, "grad_norm": grad_norm,
                      "batch_sequences": n_seqs, "tokens": state["tokens"]}
            if state["step"] % t.log_every == 0 or state["step"] == last_step:
                now = time.perf_counter()
                tok_s = (state["tokens"] - tokens_last) / max(now - t_last, 1e-9)
                t_last, tokens_last = now, state["tokens"]
                record.update(tokens_per_s=tok_s,
                              mfu=tok_s * stats.flops_per_token_train / (peak * env.world_size))
            if heldout is not None and t.eval_every and state["step"] % t.eval_every == 0:
                record["eval_loss"] = evaluate_loss(model, heldout, t.eval_sequences, t.micro_batch_size, device,
                                                    amp_dtype)
            if on_step is not None:
                on_step(record)
            metrics.log(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}",
                                **({"tok/s": f"{record['tokens_per_s']:.0f}", "mfu": f"{record['mfu']:.1%}"}
                                   if "tokens_per_s" in record else {}))
            if save_checkpoints and state["step"] % t.save_every == 0 and state["step"] < last_step:
                save()
    except BaseException:
        metrics.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    if heldout is not None:
        if "eval_loss" in record and record["step"] == state["step"]:  # just evaluated at the last step
            result.eval_loss = record["eval_loss"]
        else:
            result.eval_loss = evaluate_loss(model, heldout, t.eval_sequences, t.micro_batch_size, device,
                                             amp_dtype)
            metrics.log({"step": state["step"], "eval_loss": result.eval_loss})
    if save_checkpoints and (result.last_checkpoint is None
                             or Path(result.last_checkpoint).name != ckpt.step_dir_name(state["step"])):
        save()
    metrics.close()
    result.step = state["step"]
    if result.stopped_early:
        say(result.stopped_early)
    return result
