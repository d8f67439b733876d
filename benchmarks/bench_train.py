"""Tokens/s and MFU of one optimizer step: Xmodel's training step against a plain transformers loop.

Same shape (the `tiny` preset by default), batch, sequence and weights. Baselines, measured in the same run:

* HF eager: `LlamaForCausalLM` + `torch.optim.AdamW`, fp32, no compile;
* HF at its best: the same with `torch.compile` and fused AdamW, in the precision this machine runs fastest
  (`--precision auto`: the trainer's own rule — bf16 autocast only where a bf16 product of the model's MLP shape
  measures ≥ 1.2× fp32; on an AVX2-only CPU that is fp32, where bf16 is emulated 10–30× slower).

Xmodel's step is the trainer's own `train_step` (forward/backward, clip, AdamW with μP groups), with the config's
loss (`chunked` cross-entropy by default) and the same precision. Variant names carry their precision ("xmodel
fp32 chunked-loss compile", "hf bf16+compile+fused"); `--precision both` runs every variant in fp32 and bf16.
All variants are built and compiled first, then timed one step each in turn for `--steps` rounds; the ratios are
medians of the rounds' ratios (this VM's speed drifts by tens of percent over minutes). Goals: ≥ 2.5× HF eager
and ≥ 1.2× HF at its best. The first lines name the CPU (model, the instruction sets that decide bf16 speed)
and the two measured matmul rates behind the precision.

    python benchmarks/bench_train.py [--preset tiny] [--batch 4] [--seq 256] [--steps 6] [--no-compile]
                                     [--precision auto|fp32|bf16|both] [--profile 4] [--device cuda]
                                     [--no-baselines]

On a GPU, the issue's figure (Xmodel-2 1.2B at 4,096 tokens, bf16): `--device cuda --preset xmodel-2-1.2b
--batch 1 --seq 4096 --steps 5 --no-baselines --variants "xmodel bf16 chunked-loss compile"` prints tokens/s,
MFU against the GPU's bf16 dense peak and the variant's peak memory. `--activation-checkpointing` recomputes each
decoder layer in backward (`train.activation_checkpointing`); `--peak-flops` replaces the table's peak in MFU (a
measured matmul rate, as benchmarks/gpu/run.sh passes); `--json FILE` writes the figures.

`--profile N` then profiles N more steps of the best Xmodel variant and of HF at its best
(alternating) and prints where a step's time goes in each, op by op (inductor kernels and matmul shapes named).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import llama_like  # noqa: E402

from xmodel import XmodelForCausalLM  # noqa: E402
from xmodel.config import load_config  # noqa: E402
from xmodel.model.precision import Precision, benchmark_precisions, cpu_description, probe_shape  # noqa: E402
from xmodel.model.stats import model_stats  # noqa: E402
from xmodel.train.build import Built  # noqa: E402
from xmodel.train.distributed import DistEnv  # noqa: E402
from xmodel.train.metrics import peak_flops_per_device  # noqa: E402
from xmodel.train.optimizers import build_optimizers  # noqa: E402
from xmodel.train.step import train_step  # noqa: E402


PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def variant_precision(name: str) -> str:
    """"fp32" or "bf16", from a variant's name ("hf eager fp32", "hf bf16+compile+fused", "xmodel fp32 …")."""
    return "fp32" if name == "hf eager fp32" else name.split()[1].split("+")[0]


def hf_step_fn(model, optimizer, ids, bf16: bool):
    def step():
        ctx = torch.autocast(ids.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def xmodel_step_fn(model, step_model, optimizers, ids, bf16: bool, chunked: bool):
    """The trainer's own step (`train_step`: forward/backward, clip, AdamW with the device-side skip of
    non-finite steps), which leaves every figure on the device."""
    built = Built(model=model, module=model, step_model=step_model, optimizers=optimizers,
                  env=DistEnv(device=ids.device), parallel="none",
                  precision=Precision(*(["bf16"] * 2 if bf16 else ["fp32"] * 2), "as set", str(ids.device)))
    batch = [{"input_ids": ids, "labels": ids}]
    targets = ids.shape[0] * (ids.shape[1] - 1)

    def step():
        train_step(built, batch, targets, grad_clip=1.0, chunked_loss=chunked)
    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps: int, warmup: int = 2, device: torch.device = torch.device("cpu")) -> list[float]:
    for _ in range(warmup):  # warm-up (and compilation)
        fn()
    out = []
    for _ in range(steps):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6, help="timed rounds (one step of every variant each)")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out of every variant")
    ap.add_argument("--variants", default="all", help="comma list of variant names to run (default all)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="then profile N steps each of the best Xmodel variant and HF with the same switches")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]; on CUDA the peak memory of each variant is "
                    "printed and MFU is against the GPU's bf16 dense peak")
    ap.add_argument("--no-baselines", action="store_true",
                    help="time only the Xmodel variants (a large preset on a GPU: MFU and memory, no ratios)")
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="Xmodel variants recompute each decoder layer in backward (train.activation_checkpointing)")
    ap.add_argument("--peak-flops", type=float, default=None, metavar="FLOP/S",
                    help="peak for MFU (default: the GPU's datasheet figure, or measured on a CPU in each "
                         "variant's precision)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "both"],
                    help="the variants' precision (auto: the trainer's rule — bf16 only where a bf16 product of "
                         "the model's MLP shape measures ≥ 1.2x fp32; both: every variant in each)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE as JSON")
    args = ap.parse_args()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        ap.error(f"--device {args.device!r}: not a device name (cpu, cuda, cuda:1, …)")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available here")
    if args.profile and device.type != "cpu":
        ap.error("--profile reads CPU self time; use it with --device cpu")
    if args.profile:  # name each generated C++ kernel in the profile (set before anything is compiled)
        import torch._inductor.config as inductor_config
        inductor_config.cpp.enable_kernel_profile = True
    torch.manual_seed(0)
    cfg = load_config(args.preset, overrides={"train.schedule.max_lr": 1e-3}).model
    run_cfg = load_config(args.preset, overrides={"train.schedule.max_lr": 1e-3})
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)
    tokens = args.batch * args.seq
    compile_ok = not args.no_compile

    def make_hf(switches: bool, bf16: bool):
        model = llama_like(cfg).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=switches or None)
        step_model = torch.compile(model) if switches and compile_ok else model
        return hf_step_fn(step_model, opt, ids, bf16=bf16)

    def make_xmodel(bf16: bool, chunked: bool, compiled: bool, optimizer: str = "adamw"):
        model = XmodelForCausalLM(cfg).to(device).train()
        if args.activation_checkpointing:
            model.gradient_checkpointing_enable()  # as the trainer's build does
        train_cfg = dataclasses.replace(run_cfg.train, optimizer=optimizer)
        opt = build_optimizers(model, train_cfg, device)
        step_model = torch.compile(model) if compiled and compile_ok else model
        return xmodel_step_fn(model, step_model, opt, ids, bf16, chunked)

    # Every precision's variants exist; those of the precision `--precision` resolves to run unless --variants
    # names others ("auto": the trainer's own rule, bf16 only where a bf16 product of the model's MLP shape
    # measured faster; HF then runs at its best on this CPU too, e.g. fp32 + compile + fused AdamW on AVX2).
    def variants_in(p: str) -> dict:
        bf16 = p == "bf16"
        return {
            f"hf {p}+compile+fused": lambda: make_hf(True, bf16),
            f"xmodel {p} standard-loss": lambda: make_xmodel(bf16, False, False),
            f"xmodel {p} chunked-loss": lambda: make_xmodel(bf16, True, False),
            f"xmodel {p} chunked-loss compile": lambda: make_xmodel(bf16, True, True),
            f"xmodel {p} standard-loss compile": lambda: make_xmodel(bf16, False, True),
            # Muon for the hidden matrices (5 Newton–Schulz iterations each, in bf16), AdamW for the rest.
            f"xmodel {p} chunked-loss compile muon": lambda: make_xmodel(bf16, True, True, "muon"),
        }

    chosen, choice = benchmark_precisions(args.precision, device,
                                          probe_shape(cfg.hidden_size, cfg.intermediate_size, tokens))
    variants = {"hf eager fp32": lambda: make_hf(False, False)}
    for p in ("fp32", "bf16"):
        variants.update({k: v for k, v in variants_in(p).items() if p in chosen or args.variants != "all"})
    if args.variants != "all":
        wanted = set(args.variants.split(","))
        unknown = wanted - set(variants)
        if unknown:
            ap.error(f"--variants: unknown {', '.join(sorted(unknown))} (known: {', '.join(variants)})")
        variants = {k: v for k, v in variants.items() if k in wanted or k.startswith("hf")}
        used = {p for p in ("fp32", "bf16") if any(k.startswith(f"xmodel {p}") for k in variants)}
        variants = {k: v for k, v in variants.items() if not k.startswith("hf ") or k == "hf eager fp32"
                    or any(k.startswith(f"hf {p}+") for p in used)}
    if args.no_baselines:
        variants = {k: v for k, v in variants.items() if not k.startswith("hf")}
    stats = model_stats(cfg, args.seq)
    flops_per_token = stats.flops_per_token_train
    precisions = {variant_precision(k) for k in variants}
    peaks = {p: args.peak_flops or peak_flops_per_device(device, PRECISION_DTYPES[p]) for p in sorted(precisions)}
    peak_source = "given" if args.peak_flops else "measured" if device.type == "cpu" else "datasheet"
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"{cpu_description()}, {torch.get_num_threads()} threads")
    print(f"preset {args.preset} ({stats.params_total / 1e6:.1f}M params), batch {args.batch} × seq {args.seq}, "
          f"{where}"
          f"{'; activation checkpointing' if args.activation_checkpointing else ''}")
    print(f"{choice}")
    print("MFU peaks (" + peak_source + "): " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()))

    def variant_peak(name: str) -> float:
        return peaks[variant_precision(name)]
    # Every variant is built and warmed up (compiled) first; then the timed steps go round-robin over the
    # variants, so a drift in this machine's speed over minutes hits all of them alike.
    steps, peak_memory, warmup_seconds = {}, {}, {}
    for name, make in variants.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        steps[name] = make()
        timed(steps[name], 0, device=device)
        warmup_seconds[name] = time.perf_counter() - t0  # building, compiling and two steps
        if device.type == "cuda":  # this variant's own peak: weights, optimizer state, activations
            peak_memory[name] = torch.cuda.max_memory_allocated(device) - before
    # One more untimed step of each, now that all exist: building a later model can invalidate an earlier
    # compiled graph's guards (transformers' output-capture registry grows), and that recompile is not a step.
    for name in steps:
        timed(steps[name], 0, warmup=1, device=device)
    seconds = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.steps):
        # Each round starts at the next variant, so no variant always runs right after the same neighbour
        # (in a fixed order Xmodel always followed HF's compiled step, and the ratio came out 0.96-0.99x
        # where alternating pairs gave 1.06-1.17x).
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].extend(timed(steps[name], 1, warmup=0, device=device))
    results = {name: tokens / statistics.median(ts) for name, ts in seconds.items()}
    for name, tps in results.items():
        memory = f"   peak memory {peak_memory[name] / 2**30:6.1f} GiB" if name in peak_memory else ""
        print(f"  {name:38s} {tps:8.0f} tok/s   MFU {tps * flops_per_token / variant_peak(name):6.1%}{memory}",
              flush=True)
    best = max((k for k in results if k.startswith("xmodel")), key=results.get)

    def ratio(baseline: str) -> str:
        per_round = [b / x for x, b in zip(seconds[best], seconds[baseline])]
        return (f"{statistics.median(per_round):.2f}x (median of {len(per_round)} rounds; "
                f"{min(per_round):.2f}-{max(per_round):.2f}x)")

    print(f"best xmodel variant: {best}")
    if args.json:
        write_json(args, device, where, stats, {n: variant_peak(n) for n in results}, peak_source, results, seconds,
                   peak_memory, warmup_seconds, choice)
    if args.no_baselines:
        return
    hf_best = max((k for k in results if k.startswith("hf ") and k != "hf eager fp32"), key=results.get,
                  default="hf eager fp32")
    print(f"ratio vs HF eager fp32:             {ratio('hf eager fp32')}")
    print(f"ratio vs HF at its best here ({hf_best}): {ratio(hf_best)}")
    if args.profile:
        print_profile({best: steps[best], hf_best: steps[hf_best]}, args.profile)


def write_json(args, device, where, stats, peaks, peak_source, results, seconds, peak_memory, warmup_seconds,
               choice):
    import json

    record = {
        "preset": args.preset, "batch": args.batch, "seq": args.seq, "device": str(device), "where": where,
        "activation_checkpointing": args.activation_checkpointing, "compile": not args.no_compile,
        "params": stats.params_total, "flops_per_token": stats.flops_per_token_train,
        "peak_flops": max(peaks.values()), "peak_source": peak_source, "torch": torch.__version__,
        "precision": choice.to_dict(),
        "variants": {name: {"tokens_per_s": tps, "mfu": tps * stats.flops_per_token_train / peaks[name],
                            "step_s": seconds[name], "warmup_s": warmup_seconds.get(name),
                            "peak_memory_gib": peak_memory[name] / 2**30 if name in peak_memory else None}
                     for name, tps in results.items()},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1))


def print_profile(steps: dict, n: int, rows: int = 25) -> None:
    """Self CPU time per op and step, side by side, from `n` alternating profiled steps of each variant."""
    from torch.profiler import profile

    per_op = {name: collections.Counter() for name in steps}
    for r in range(n):
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            with profile(record_shapes=True) as prof:
                steps[name]()
            for e in prof.key_averages(group_by_input_shape=True):
                key = f"{e.key} {e.input_shapes[:2]}" if e.key == "aten::mm" else e.key
                per_op[name][key] += e.self_cpu_time_total / 1e3 / n
    names = list(steps)
    print(f"\nms per step (self CPU time, {n} profiled steps each)")
    print("".join(f"{name[:24]:>26s}" for name in names) + "  op")
    keys = sorted(set().union(*per_op.values()), key=lambda k: -sum(c[k] for c in per_op.values()))
    for key in keys[:rows]:
        print("".join(f"{per_op[name][key]:26.1f}" for name in names) + f"  {key[:100]}")
    print("".join(f"{sum(per_op[name].values()):26.1f}" for name in names) + "  total")


if __name__ == "__main__":
    main()
