"""`xmodel eval`: the reports' benchmark tables, calibration and the post-training scaling law for one model."""

from __future__ import annotations

from ..errors import XmodelError
from .common import add_data_root_arg

SUITE_CHOICES = ["commonsense", "reasoning", "code", "code-lmeval", "chinese", "xmodel-lm-commonsense",
                 "xmodel-lm-chinese", "quick", "scaling-law", "agents", "all"]
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "auto": "auto"}


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a model on the reports' benchmarks (lm-evaluation-harness, local files)",
        description="Evaluate MODEL with lm-evaluation-harness on task YAMLs that read the benchmark files of the "
                    "data root. Suites: commonsense (Xmodel-2 Table 2: ARC-c/e, BoolQ, HellaSwag, OpenBookQA, "
                    "PIQA, SciQ, Winogrande; 0-shot acc), reasoning (GSM8K 5-shot, MATH 4-shot, BBH 3-shot CoT, "
                    "MMLU 0-shot + calibration), code (HumanEval, MBPP pass@1 as bigcode-evaluation-harness "
                    "measures them, Table 3; sandboxed), code-lmeval (lm-eval's own humaneval and 3-shot mbpp), "
                    "chinese (CMMLU, C-Eval), xmodel-lm-commonsense (Table 2's eight + TriviaQA, a 3,000-question "
                    "sample), xmodel-lm-chinese (ARC-zh, XCOPA-zh, XNLI-zh: Xmodel-LM's Chinese average), "
                    "scaling-law (loss by context position on WikiText-2, power-law fit), agents (ReAct, Table 4), "
                    "quick (ARC-e, HellaSwag, PIQA), all (every table). A benchmark whose files are missing is "
                    "skipped with a message. Results merge into OUTPUT/results.json.")
    p.add_argument("model", help="model directory (save_pretrained layout, with its tokenizer)")
    p.add_argument("--suite", action="append", choices=SUITE_CHOICES, metavar="SUITE",
                   help=f"one of {', '.join(SUITE_CHOICES)} (repeatable; default: commonsense)")
    p.add_argument("--tasks", help="comma-separated benchmark names within the suites, e.g. arc_easy,gsm8k")
    p.add_argument("--limit", type=float, help="documents per task (per subject for MMLU/CMMLU/BBH/MATH); "
                                               "a value < 1 is a fraction. For quick checks only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, … (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="weights' dtype for evaluation (auto: the checkpoint's, but fp32 on a CPU where its "
                        "bf16/fp16 products measure slower than fp32's)")
    p.add_argument("--tokenizer", help="tokenizer directory, if not the model directory")
    p.add_argument("--add-bos", action="store_true", help="prepend BOS to every request (lm-eval default: off)")
    p.add_argument("--max-gen-toks", type=int, help="cap generated tokens of generation tasks (default: each "
                                                    "task's own, e.g. 256 for GSM8K, 1024 for BBH)")
    p.add_argument("--code-samples", type=int, default=1,
                   help="completions per code problem: 1 = greedy pass@1; n > 1 = sampling and pass@k, k ≤ n")
    p.add_argument("--code-temperature", type=float,
                   help="sampling temperature when n > 1 (default: bigcode's, 0.2 for n < 10 — pass@1-style — and "
                        "0.8 for n ≥ 10 — pass@10/pass@100; top-p 0.95); stated in the results")
    p.add_argument("--code-timeout", type=float, default=10.0, help="seconds per program in the sandbox")
    p.add_argument("--code-memory-mb", type=int, default=2048, help="address-space limit per program")
    p.add_argument("--context-length", type=int, default=1024, help="scaling-law window length (tokens)")
    p.add_argument("--max-windows", type=int, help="scaling-law: at most this many windows (default: all)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--source", choices=["local", "hub"], default="local",
                   help="local: our task YAMLs on the data root's files (default); hub: lm-eval's built-in tasks "
                        "on hub data (needs a network; code benchmarks stay local)")
    p.add_argument("--log-samples", action="store_true",
                   help="also write lm-eval's per-document records — every request's prompt (arguments), response "
                        "(resps, filtered_resps) and score — as OUTPUT/samples_TASK.jsonl")
    p.add_argument("--output", help="results directory (default: runs/eval/<model directory name>)")
    add_data_root_arg(p)
    p.set_defaults(func=run)


def check_args(args) -> None:
    if args.batch_size < 1:
        raise XmodelError("--batch-size: must be ≥ 1")
    if args.limit is not None and args.limit <= 0:
        raise XmodelError("--limit: must be > 0")
    if args.max_gen_toks is not None and args.max_gen_toks < 1:
        raise XmodelError("--max-gen-toks: must be ≥ 1")
    if args.code_samples < 1:
        raise XmodelError("--code-samples: must be ≥ 1")
    if args.code_temperature is not None and args.code_temperature <= 0:
        raise XmodelError("--code-temperature: must be > 0 (n = 1 is greedy)")
    if args.code_timeout <= 0 or args.code_memory_mb < 64:
        raise XmodelError("--code-timeout must be > 0 and --code-memory-mb ≥ 64")
    if args.context_length < 8:
        raise XmodelError("--context-length: must be ≥ 8")


def run(args) -> int:
    from ..eval.job import EvalJob, run_eval
    from ..eval.run import EvalSettings

    check_args(args)
    settings = EvalSettings(limit=args.limit, batch_size=args.batch_size, device=args.device,
                            dtype=DTYPES[args.dtype], add_bos_token=args.add_bos, max_gen_toks=args.max_gen_toks,
                            code_samples=args.code_samples, code_temperature=args.code_temperature, seed=args.seed,
                            source=args.source)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None
    run_eval(EvalJob(args.model, output=args.output, suites=tuple(args.suite or ["commonsense"]), tasks=tasks,
                     data_root=args.data_root, tokenizer=args.tokenizer, settings=settings,
                     code_timeout_s=args.code_timeout, code_memory_mb=args.code_memory_mb,
                     context_length=args.context_length, max_windows=args.max_windows,
                     log_samples=args.log_samples))
    return 0
