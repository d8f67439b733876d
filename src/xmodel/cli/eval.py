"""`xmodel eval`: the reports' benchmark tables, calibration and the post-training scaling law for one model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..data.root import data_root as resolve_data_root
from .common import add_data_root_arg
from ..errors import XmodelError
from .common import human, require_model_dir

SUITE_CHOICES = ["commonsense", "reasoning", "code", "chinese", "quick", "scaling-law", "agents", "all"]
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a model on the reports' benchmarks (lm-evaluation-harness, local files)",
        description="Evaluate MODEL with lm-evaluation-harness on task YAMLs that read the benchmark files of the "
                    "data root. Suites: commonsense (ARC-c/e, BoolQ, HellaSwag, OpenBookQA, PIQA, SciQ, "
                    "Winogrande; 0-shot acc), reasoning (GSM8K 5-shot, MATH 4-shot, BBH 3-shot CoT, MMLU 0-shot "
                    "+ calibration), code (HumanEval, MBPP pass@1, sandboxed), chinese (CMMLU, C-Eval), "
                    "scaling-law (loss by context position on WikiText-2, power-law fit), quick (ARC-e, "
                    "HellaSwag, PIQA), all. A benchmark whose files are missing is skipped with a message. "
                    "Results merge into OUTPUT/results.json.")
    p.add_argument("model", help="model directory (save_pretrained layout, with its tokenizer)")
    p.add_argument("--suite", action="append", choices=SUITE_CHOICES, metavar="SUITE",
                   help=f"one of {', '.join(SUITE_CHOICES)} (repeatable; default: commonsense)")
    p.add_argument("--tasks", help="comma-separated benchmark names within the suites, e.g. arc_easy,gsm8k")
    p.add_argument("--limit", type=float, help="documents per task (per subject for MMLU/CMMLU/BBH/MATH); "
                                               "a value < 1 is a fraction. For quick checks only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, … (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weights' dtype for evaluation")
    p.add_argument("--tokenizer", help="tokenizer directory, if not the model directory")
    p.add_argument("--add-bos", action="store_true", help="prepend BOS to every request (lm-eval default: off)")
    p.add_argument("--max-gen-toks", type=int, help="cap generated tokens of generation tasks (default: each "
                                                    "task's own, e.g. 256 for GSM8K, 1024 for BBH)")
    p.add_argument("--code-samples", type=int, default=1,
                   help="completions per code problem: 1 = greedy pass@1; n > 1 = sampling and pass@k, k ≤ n")
    p.add_argument("--code-temperature", type=float, default=0.8, help="sampling temperature when n > 1")
    p.add_argument("--code-timeout", type=float, default=10.0, help="seconds per program in the sandbox")
    p.add_argument("--code-memory-mb", type=int, default=2048, help="address-space limit per program")
    p.add_argument("--context-length", type=int, default=1024, help="scaling-law window length (tokens)")
    p.add_argument("--max-windows", type=int, help="scaling-law: at most this many windows (default: all)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--source", choices=["local", "hub"], default="local",
                   help="local: our task YAMLs on the data root's files (default); hub: lm-eval's built-in tasks "
                        "on hub data (needs a network; code benchmarks stay local)")
    p.add_argument("--log-samples", action="store_true", help="also write lm-eval's per-document records "
                                                              "(OUTPUT/samples_TASK.jsonl)")
    p.add_argument("--output", help="results directory (default: runs/eval/<model directory name>)")
    add_data_root_arg(p)
    p.set_defaults(func=run)


def load_model_and_tokenizer(model_dir: Path, tokenizer_dir: str | None, device: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import xmodel  # noqa: F401  (registers the Auto classes)

    tok_path = tokenizer_dir or model_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
    except (OSError, ValueError, TypeError):
        raise XmodelError(f"{tok_path}: no tokenizer found (pass --tokenizer DIR)") from None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    if len(tokenizer) > model.config.vocab_size:
        raise XmodelError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                          f"{model.config.vocab_size}")
    return model, tokenizer


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise XmodelError(f"--device {name}: CUDA is not available on this machine")
    return name


def check_args(args) -> None:
    if args.batch_size < 1:
        raise XmodelError("--batch-size: must be ≥ 1")
    if args.limit is not None and args.limit <= 0:
        raise XmodelError("--limit: must be > 0")
    if args.max_gen_toks is not None and args.max_gen_toks < 1:
        raise XmodelError("--max-gen-toks: must be ≥ 1")
    if args.code_samples < 1:
        raise XmodelError("--code-samples: must be ≥ 1")
    if args.code_timeout <= 0 or args.code_memory_mb < 64:
        raise XmodelError("--code-timeout must be > 0 and --code-memory-mb ≥ 64")
    if args.context_length < 8:
        raise XmodelError("--context-length: must be ≥ 8")


def run(args) -> int:
    check_args(args)
    suites = args.suite or ["commonsense"]
    data_root = resolve_data_root(args.data_root)
    model_dir = require_model_dir(args.model)
    out_dir = Path(args.output) if args.output else Path("runs") / "eval" / model_dir.resolve().name
    device = resolve_device(args.device)
    if args.source == "local":  # our tasks read local files; nothing may wait on the hub
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ..eval import code as code_eval
    from ..eval.harness import require_lm_eval
    from ..eval.results import RESULTS_FILE, load_results, merge_results, write_json
    from ..eval.run import EvalSettings, evaluate_model, versions
    from ..eval.sandbox import SandboxLimits, isolation_report
    from ..eval.suites import suite_benchmarks

    table_suites = [s for s in suites if s not in ("scaling-law", "agents")]
    only = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if only and not table_suites:
        raise XmodelError("--tasks: selects benchmarks of the table suites, not of scaling-law")
    benchmarks = suite_benchmarks(table_suites, only) if table_suites else []
    if benchmarks:
        require_lm_eval()
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    settings = EvalSettings(limit=limit, batch_size=args.batch_size, device=device, dtype=DTYPES[args.dtype],
                            add_bos_token=args.add_bos, max_gen_toks=args.max_gen_toks,
                            code_samples=args.code_samples, code_temperature=args.code_temperature, seed=args.seed,
                            source=args.source)
    code_eval.LIMITS = SandboxLimits(timeout_s=args.code_timeout, memory_mb=args.code_memory_mb)

    model, tokenizer = load_model_and_tokenizer(model_dir, args.tokenizer, device, settings.dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"evaluating {model_dir} ({human(n_params)} parameters) on {device}, data root {data_root}")

    result = {"benchmarks": {}, "skipped": {}}
    if benchmarks:
        result = evaluate_model(model, tokenizer, benchmarks, data_root, settings,
                                calibration_plot=out_dir / "calibration_mmlu.png", log_samples=args.log_samples)
    extras = {"calibration": result.get("calibration")}
    if any(b.name in ("humaneval", "mbpp") for b in benchmarks):
        extras["code_sandbox"] = {**isolation_report(), "timeout_s": args.code_timeout,
                                  "memory_mb": args.code_memory_mb}
    if "scaling-law" in suites or "all" in suites:
        from ..eval.scaling_law import run_scaling_law

        extras["scaling_law"] = run_scaling_law(model, tokenizer, data_root, args.context_length,
                                                args.max_windows, device, out_dir / "scaling_law_wikitext2.png",
                                                title=f"{model_dir.name} on WikiText-2 test")
    model_info = {"path": str(model_dir.resolve()), "name": model_dir.resolve().name, "parameters": n_params,
                  "model_type": model.config.model_type}
    if "agents" in suites:  # ReAct episodes (Table 4): agents.json and traces beside results.json
        from ..eval.agents import AgentSettings, evaluate_agents

        episodes = int(args.limit) if args.limit is not None and args.limit >= 1 else 50
        evaluate_agents(model, tokenizer, data_root, out_dir, AgentSettings(episodes=episodes,
                                                                            batch_size=args.batch_size),
                        model_info=model_info)
    run_info = {"suites": suites, "settings": settings.to_dict(), "data_root": str(data_root),
                "versions": versions(), "configs": result.get("configs", {})}
    path = out_dir / RESULTS_FILE
    old = load_results(path) if path.is_file() else None
    merged = merge_results(old, model_info, run_info, result["benchmarks"], result["skipped"], extras)
    write_json(path, merged)
    for task, records in result.get("samples", {}).items():
        write_jsonl(out_dir / f"samples_{task}.jsonl", records)
    print_summary(result, extras)
    print(f"wrote {path}")
    return 0


def write_jsonl(path: Path, records: list[dict]) -> None:
    from ..eval.results import _jsonable

    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n")
    tmp.replace(path)


def print_summary(result: dict, extras: dict) -> None:
    rows = result.get("benchmarks", {})
    if rows:
        print(f"{'benchmark':<14} {'metric':<26} {'value':>8} {'± stderr':>9} {'docs':>7} {'shots':>6}")
        for name, row in rows.items():
            err = f"{row['stderr']:.2f}" if row.get("stderr") is not None else "–"
            print(f"{name:<14} {row['metric']:<26} {row['value']:8.2f} {err:>9} {row['n']:>7} "
                  f"{str(row['num_fewshot']):>6}")
    for name, reason in result.get("skipped", {}).items():
        print(f"{name:<14} skipped: {reason}")
    cal = extras.get("calibration")
    if cal:
        print(f"MMLU calibration: ECE {cal['ece']:.4f} over {cal['n']} questions")
    sl = extras.get("scaling_law")
    if sl:
        f = sl["fit"]
        print(f"scaling law: L(t) = {f['b']:.3f} + (t/{f['c']:.2f})^{f['a']:.3f}, R² {f['r2']:.4f} "
              f"(report: 1.772 + (t/32.84)^-0.575)")
        if sl.get("warning"):
            print(f"scaling law: {sl['warning']}")
