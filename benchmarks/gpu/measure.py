"""The measurements of benchmarks/gpu/run.sh that have no benchmark script of their own, one subcommand each,
each writing one JSON file:

    python benchmarks/gpu/measure.py env     --out F   # versions, the GPU, which of our modules import
    python benchmarks/gpu/measure.py matmul  --out F   # measured bf16 matmul rate and copy bandwidth (the ceilings)
    python benchmarks/gpu/measure.py trial   --out F   # a nano wind-tunnel trial through the trainer: trials/GPU-hour
    python benchmarks/gpu/measure.py decode  --out F   # the generation engine's decoding tokens/s at batch 1 and 32
    python benchmarks/gpu/measure.py report  --work DIR --out DIR   # gather everything into one JSON + a table

run.sh passes small shapes for its CPU dry run (--dry-run); the defaults are the GPU run's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

TABLE5_TOKENS = 16_777_216  # tune.mup.tokens: the Xmodel-2 report's budget per μP trial (Table 5)


def write(path: str, record: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1, default=str))
    print(json.dumps(record, default=str)[:2000], flush=True)


def device_of(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- env ----------------------------------------------------------------------------------------------------

GPU_PATH_MODULES = ["xmodel.model", "xmodel.train.trainer", "xmodel.train.distributed", "xmodel.train.checkpoint",
                    "xmodel.inference.engine", "xmodel.inference.runtime", "xmodel.inference.server",
                    "xmodel.cli.main", "xmodel.tune.runs"]
OPTIONAL_PACKAGES = ["datatrove", "lm_eval", "optuna", "gguf", "fastapi", "uvicorn", "pydantic", "flash_attn",
                     "xdist", "triton"]


def cmd_env(args) -> None:
    import torch
    import transformers

    record = {"python": platform.python_version(), "torch": torch.__version__,
              "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
              "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "modules": {}, "packages": {}}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                      multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}")
    for name in GPU_PATH_MODULES:
        try:
            importlib.import_module(name)
            record["modules"][name] = "ok"
        except Exception as e:  # noqa: BLE001 — the record says what failed
            record["modules"][name] = f"{type(e).__name__}: {e}"
    for name in OPTIONAL_PACKAGES:
        try:
            module = importlib.import_module(name)
            record["packages"][name] = getattr(module, "__version__", "present")
        except Exception:  # noqa: BLE001
            record["packages"][name] = None
    write(args.out, record)


# ---- matmul -------------------------------------------------------------------------------------------------

def cmd_matmul(args) -> None:
    """The card's bf16 matmul rate on random data (median of timed products over three input sets, after
    warm-up) and its device-to-device copy bandwidth (bytes read + written): the ceilings MFU and decoding are
    read against."""
    import torch

    device = device_of(args.device)
    n = args.size or (8192 if device.type == "cuda" else 1024)
    torch.manual_seed(0)
    sets = [(torch.randn(n, n, device=device, dtype=torch.bfloat16),
             torch.randn(n, n, device=device, dtype=torch.bfloat16)) for _ in range(3)]
    out = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    for a, b in sets:  # warm-up: library handles, kernel choice, clocks
        torch.matmul(a, b, out=out)
    sync(device)
    times = []
    for i in range(args.repeats):
        a, b = sets[i % 3]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(a, b, out=out)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            torch.matmul(a, b, out=out)
            times.append(time.perf_counter() - t0)
    assert torch.isfinite(out).all(), "matmul produced non-finite values"
    flops = 2 * n ** 3
    record = {"device": str(device), "size": n, "repeats": args.repeats,
              "bf16_matmul_flops": flops / statistics.median(times), "bf16_matmul_flops_max": flops / min(times)}
    del sets, out
    numel = (1 << 30) if device.type == "cuda" else (1 << 24)  # 2 GiB of bf16 on the GPU, 32 MiB on a CPU
    src = torch.randn(numel, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    copies = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        copies.append(time.perf_counter() - t0)
    record["copy_bytes_per_s"] = 2 * src.numel() * src.element_size() / statistics.median(copies)
    write(args.out, record)


# ---- trial --------------------------------------------------------------------------------------------------

class RandomTokens:
    """Random token rows, fixed by position (a trial's throughput does not depend on what the tokens say)."""

    def __init__(self, vocab: int, seq_len: int):
        self.vocab, self.seq_len = vocab, seq_len

    def batch(self, start: int, count: int) -> dict:
        import torch

        ids = torch.randint(3, self.vocab, (count, self.seq_len), generator=torch.Generator().manual_seed(start))
        return {"input_ids": ids, "labels": ids.clone()}


def cmd_trial(args) -> None:
    """Training throughput of one μP wind-tunnel trial: the nano preset through the trainer's own `train` (the
    function every `tune` trial runs, `xmodel.tune.runs.run_budgeted`), with the preset's batch (micro-batch 8
    × 4,096 tokens, 32,768 tokens per step) in bf16. Trials per GPU-hour at the report's 16.8M-token budget
    follow from the steady tokens/s plus the measured start-up (model build, and compilation when compiled);
    a trial's held-out evaluations (4 × 64 sequences, forward only) are not counted."""
    import torch

    from xmodel.config import load_config
    from xmodel.model.stats import model_stats
    from xmodel.train.callbacks import Callback
    from xmodel.train.trainer import train

    device = device_of(args.device)
    results = {}
    for compiled in args.compile:
        overrides = {"train.max_steps": args.steps, "train.micro_batch_size": args.micro_batch,
                     "train.batch_tokens": args.micro_batch * args.seq, "train.precision": "bf16",
                     "train.compile": compiled == "on", "train.device": str(device), "train.log_every": args.steps,
                     "train.sample_prompts": [], "data.seq_len": args.seq}
        cfg = load_config(args.preset, overrides=overrides)
        warm = max(0, min(args.warmup, args.steps - 2))  # at least one timed step

        class Clock(Callback):
            """Host time at the start and after steps 1, 1 + warm and the last; synchronised only there, so the
            steps in between run as the trainer runs them (the host queues ahead of the device)."""

            def on_start(self, run):
                sync(device)
                self.at = {0: time.perf_counter()}

            def on_step(self, run, record):
                if run.state.step in (1, 1 + warm, args.steps):
                    sync(device)
                    self.at[run.state.step] = time.perf_counter()

        clock = Clock()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = train(cfg.model, cfg.train, RandomTokens(cfg.model.vocab_size, args.seq), tmp, callbacks=[clock],
                           progress=False, log=lambda *_: None)
        assert result.step == args.steps and all(x == x for x in result.losses), result  # no NaN
        tokens_per_step = args.micro_batch * args.seq
        at = clock.at
        steady = (at[args.steps] - at[1 + warm]) / (args.steps - 1 - warm)
        tps = tokens_per_step / steady
        startup = (at[0] - t0) + (at[1 + warm] - at[0]) - (1 + warm) * steady  # beyond steady steps
        trial_s = TABLE5_TOKENS / tps + startup
        stats = model_stats(cfg.model, args.seq)
        results[f"compile {compiled}"] = {
            "tokens_per_s": tps, "step_s": steady, "startup_s": startup, "trial_s": trial_s,
            "trials_per_gpu_hour": 3600 / trial_s, "trials_per_gpu_hour_steady": 3600 * tps / TABLE5_TOKENS,
            "flops_per_token": stats.flops_per_token_train, "params": stats.params_total,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "losses": result.losses}
        print(f"trial {args.preset}, compile {compiled}: {tps:,.0f} tokens/s, start-up {startup:.1f} s, "
              f"{3600 / trial_s:.1f} trials per GPU-hour at {TABLE5_TOKENS:,} tokens", flush=True)
    write(args.out, {"preset": args.preset, "seq": args.seq, "micro_batch": args.micro_batch, "steps": args.steps,
                     "budget_tokens": TABLE5_TOKENS, "device": str(device), "variants": results})


# ---- decode -------------------------------------------------------------------------------------------------

class IdsOnly:
    """The engine needs a tokenizer only to turn ids into text; this measures tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return ""


def cmd_decode(args) -> None:
    """Decoding tokens/s of `xmodel.inference.Generator` (preallocated KV cache, own decode loop) on random
    weights of a preset in bf16: greedy, `--new` tokens after a `--prompt`-token prompt, at each batch size;
    median of `--rounds` runs after one warm-up (and, with --compiled, compilation) run. tokens/s counts the
    decode phase (the engine's own clock; every step reads the sampled tokens back, so it is synchronised)."""
    import torch

    from xmodel import XmodelForCausalLM
    from xmodel.config import load_config
    from xmodel.inference import Generator, SamplingParams

    device = device_of(args.device)
    cfg = load_config(args.preset).model
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 1.2B model's CPU init would take longer than the run
        model = XmodelForCausalLM(cfg)
    model = model.to(torch.bfloat16).eval()
    weights = sum(p.numel() for p in model.parameters())
    results = {}
    for batch in args.batches:
        for compiled in args.compiled:
            generator = Generator(model, IdsOnly(), compile=compiled == "on", max_batch_size=max(args.batches))
            prompts = torch.randint(4, cfg.vocab_size, (batch, args.prompt)).tolist()
            params = [SamplingParams(max_new_tokens=args.new)] * batch
            t0 = time.perf_counter()
            generator.complete(prompts, params)
            first = time.perf_counter() - t0
            decode, prefill = [], []
            for _ in range(args.rounds):
                _, _, usage = generator.complete(prompts, params)
                assert usage.completion_tokens == [args.new] * batch, usage.completion_tokens
                decode.append(usage.decode_seconds)
                prefill.append(usage.prefill_seconds)
            tps = batch * args.new / statistics.median(decode)
            results[f"batch {batch} compile {compiled}"] = {
                "batch": batch, "compiled": compiled == "on", "tokens_per_s": tps,
                "ms_per_step": 1e3 * statistics.median(decode) / args.new,
                "prefill_s": statistics.median(prefill), "first_run_s": first}
            print(f"decode {args.preset} bf16 batch {batch}, compile {compiled}: {tps:,.1f} tokens/s "
                  f"({1e3 * statistics.median(decode) / args.new:.2f} ms per step; first run {first:.1f} s)", flush=True)
    write(args.out, {"preset": args.preset, "prompt": args.prompt, "new": args.new, "rounds": args.rounds,
                     "device": str(device), "weights": weights, "weight_bytes": 2 * weights, "variants": results})


# ---- report -------------------------------------------------------------------------------------------------

def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def junit_summary(path: Path) -> dict | None:
    """Counts and each test's outcome from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    tests = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}".removeprefix("tests.cuda.")
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "")[:500]
                break
        tests[name] = {"outcome": outcome, "seconds": float(case.get("time", 0) or 0),
                       **({"message": message} if message else {})}
    counts = {k: sum(1 for t in tests.values() if t["outcome"] == k) for k in ("passed", "failed", "error", "skipped")}
    return {**counts, "tests": tests}


def fmt(value, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def cmd_report(args) -> None:
    work, out = Path(args.work), Path(args.out)
    steps = [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines() if line.strip()] \
        if (work / "steps.jsonl").exists() else []
    env, matmul = read_json(work / "env.json"), read_json(work / "matmul.json")
    train = {k: read_json(work / f"train_ac_{k}.json") for k in ("off", "on")}
    trial, decode = read_json(work / "trial.json"), read_json(work / "decode.json")
    decode_compiled = read_json(work / "decode_compiled.json")
    tests = junit_summary(work / "junit.xml")
    record = {"mode": args.mode, "started": args.started, "wall_s": args.wall, "steps": steps, "env": env,
              "matmul": matmul, "tests": tests, "train_1p2b": train, "trial": trial, "decode": decode,
              "decode_compiled": decode_compiled}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-results.json").write_text(json.dumps(record, indent=1, default=str))

    lines = [f"# GPU run ({args.mode}): {(env or {}).get('gpu', 'no GPU')}, torch {(env or {}).get('torch')}, "
             f"transformers {(env or {}).get('transformers')}", ""]
    peak = (matmul or {}).get("bf16_matmul_flops")
    lines += [f"Measured bf16 matmul: {fmt(peak and peak / 1e12, '.1f')} TFLOP/s (size "
              f"{(matmul or {}).get('size')}); copy bandwidth {fmt((matmul or {}).get('copy_bytes_per_s') and matmul['copy_bytes_per_s'] / 1e9, '.0f')} GB/s.", ""]
    lines += ["| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} |" for s in steps]
    if tests:
        lines += ["", f"CUDA tests: {tests['passed']} passed, {tests['failed']} failed, {tests['error']} errors, "
                  f"{tests['skipped']} skipped"]
        lines += [f"- {name}: {t['outcome']}{' — ' + t['message'][:160] if t.get('message') else ''}"
                  for name, t in tests["tests"].items() if t["outcome"] != "passed"]
    lines += ["", "| measurement | shape | tokens/s | MFU (measured peak) | peak memory GiB | warm-up / start-up s |",
              "|---|---|---|---|---|---|"]
    for key, run in train.items():
        for name, v in ((run or {}).get("variants") or {}).items():
            lines.append(f"| train {run['preset']}, activation checkpointing {key} ({name}) | {run['batch']} × "
                         f"{run['seq']} | {v['tokens_per_s']:,.0f} | {v['mfu']:.1%} | "
                         f"{fmt(v.get('peak_memory_gib'), '.1f')} | {fmt(v.get('warmup_s'), '.0f')} |")
    for name, v in ((trial or {}).get("variants") or {}).items():
        mfu = v["tokens_per_s"] * v["flops_per_token"] / peak if peak else None
        lines.append(f"| wind-tunnel trial {trial['preset']}, {name}: **{v['trials_per_gpu_hour']:.1f} trials/GPU-hour** "
                     f"at {trial['budget_tokens']:,} tokens | {trial['micro_batch']} × {trial['seq']} | "
                     f"{v['tokens_per_s']:,.0f} | {fmt(mfu, '.1%')} | {fmt(v.get('peak_memory_gib'), '.1f')} | "
                     f"{v['startup_s']:.0f} |")
    bandwidth = (matmul or {}).get("copy_bytes_per_s")
    for dec in (decode, decode_compiled):
        for name, v in ((dec or {}).get("variants") or {}).items():
            # At batch 1 a decode step reads every weight once: the copy bandwidth bounds tokens/s.
            bound = bandwidth / dec["weight_bytes"] if bandwidth and v["batch"] == 1 else None
            lines.append(f"| decode {dec['preset']} bf16, {name} | prompt {dec['prompt']} + {dec['new']} | "
                         f"{v['tokens_per_s']:,.1f}{f' (weight-read bound {bound:,.0f})' if bound else ''} | — | — | "
                         f"{v['first_run_s']:.0f} |")
    (out / "gpu-results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("env")
    p.add_argument("--out", required=True)
    p = sub.add_parser("matmul")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=0, help="n of the n×n×n product (default 8192 on a GPU, 1024 on a CPU)")
    p.add_argument("--repeats", type=int, default=20)
    p = sub.add_parser("trial")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="nano")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="steps after the first left out of the steady rate")
    p.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    p = sub.add_parser("decode")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="xmodel-2-1.2b")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--compiled", nargs="+", default=["off"], choices=["off", "on"])
    p = sub.add_parser("report")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--mode", default="gpu")
    p.add_argument("--started", default="")
    p.add_argument("--wall", type=float, default=0.0)
    args = ap.parse_args(argv)
    {"env": cmd_env, "matmul": cmd_matmul, "trial": cmd_trial, "decode": cmd_decode, "report": cmd_report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
