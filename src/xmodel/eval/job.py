"""`run_eval`: what `xmodel eval` does, as a function the CLI and library code (the quickstart) both call.

    run_eval(EvalJob("runs/quickstart/model", output="runs/eval/q", suites=("commonsense",),
                     settings=EvalSettings(limit=5, device="auto")))

One model directory, the benchmark tables of some suites through lm-eval (`run.evaluate_model`), optionally the
post-training scaling law and the agent episodes; results merge into OUTPUT/results.json with the settings that
produced them. Bad input is a one-line XmodelError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..data.root import data_root as resolve_data_root
from ..errors import XmodelError
from ..inference.runtime import require_model_dir
from ..model.loading import load_model_and_tokenizer, resolve_device
from ..units import human
from .run import EvalSettings


@dataclass(frozen=True)
class EvalJob:
    """One evaluation run of one model. `settings.device` may be "auto" (cuda when available)."""

    model: str | os.PathLike
    output: str | os.PathLike | None = None      # default runs/eval/<model directory name>
    suites: tuple[str, ...] = ("commonsense",)
    tasks: tuple[str, ...] | None = None         # benchmark names within the table suites
    data_root: str | os.PathLike | None = None
    tokenizer: str | os.PathLike | None = None   # default: the model directory's
    settings: EvalSettings = field(default_factory=lambda: EvalSettings(device="auto"))
    code_timeout_s: float = 10.0                 # per generated program in the sandbox
    code_memory_mb: int = 2048
    context_length: int = 1024                   # scaling law: window length in tokens
    max_windows: int | None = None
    log_samples: bool = False                    # also write lm-eval's per-document records


def run_eval(job: EvalJob, log=print) -> dict:
    """Evaluate `job.model`, merge the results into OUTPUT/results.json, print a summary; returns the merged
    results."""
    from . import code as code_eval
    from .harness import missing_benchmark_files, require_lm_eval
    from .results import RESULTS_FILE, load_results, merge_results, write_json
    from .run import evaluate_model, versions
    from .sandbox import SandboxLimits, isolation_report
    from .suites import suite_benchmarks

    suites = list(job.suites)
    data_root = resolve_data_root(job.data_root)
    model_dir = require_model_dir(str(job.model))
    out_dir = Path(job.output) if job.output else Path("runs") / "eval" / model_dir.resolve().name
    device = resolve_device(job.settings.device)
    if job.settings.source == "local":  # our tasks read local files; nothing may wait on the hub
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

    table_suites = [s for s in suites if s not in ("scaling-law", "agents")]
    only = list(job.tasks) if job.tasks is not None else None
    if only and not table_suites:
        raise XmodelError("--tasks: selects benchmarks of the table suites, not of scaling-law")
    benchmarks = suite_benchmarks(table_suites, only) if table_suites else []
    if benchmarks:
        require_lm_eval()
        missing = missing_benchmark_files(benchmarks, data_root, job.settings.source)
        other_work = any(s in ("scaling-law", "agents", "all") for s in suites)
        if len(missing) == len(benchmarks) and not other_work:  # nothing would run: refuse, write nothing
            first, files = next(iter(missing.items()))
            raise XmodelError(f"--data-root {data_root}: holds none of the chosen benchmarks "
                              f"({', '.join(missing)}; {first} needs {files[0]})")
    limit = job.settings.limit
    whole_limit = limit is not None and limit >= 1  # documents per task; below 1 a fraction of them
    settings = replace(job.settings, device=device, limit=int(limit) if whole_limit else limit)
    code_eval.LIMITS = SandboxLimits(timeout_s=job.code_timeout_s, memory_mb=job.code_memory_mb)

    model, tokenizer = load_model_and_tokenizer(model_dir, job.tokenizer, device, settings.dtype)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"evaluating {model_dir} ({human(n_params)} parameters) on {device}, data root {data_root}")

    result = {"benchmarks": {}, "skipped": {}}
    if benchmarks:
        result = evaluate_model(model, tokenizer, benchmarks, data_root, settings,
                                calibration_plot=out_dir / "calibration_mmlu.png", log_samples=job.log_samples)
    extras = {"calibration": result.get("calibration")}
    if any(b.is_code for b in benchmarks):
        extras["code_sandbox"] = {**isolation_report(), "timeout_s": job.code_timeout_s,
                                  "memory_mb": job.code_memory_mb}
    if "scaling-law" in suites or "all" in suites:
        from .scaling_law import run_scaling_law

        extras["scaling_law"] = run_scaling_law(model, tokenizer, data_root, job.context_length, job.max_windows,
                                                device, out_dir / "scaling_law_wikitext2.png",
                                                title=f"{model_dir.name} on WikiText-2 test")
    model_info = {"path": str(model_dir.resolve()), "name": model_dir.resolve().name, "parameters": n_params,
                  "model_type": model.config.model_type}
    if "agents" in suites:  # ReAct episodes (Table 4): agents.json and traces beside results.json
        from .agents import AgentSettings, evaluate_agents

        episodes = int(limit) if whole_limit else 50
        evaluate_agents(model, tokenizer, data_root, out_dir,
                        AgentSettings(episodes=episodes, batch_size=settings.batch_size), model_info=model_info)
    run_info = {"suites": suites, "settings": result.get("settings", settings.to_dict()),
                "data_root": str(data_root),
                "versions": versions(), "configs": result.get("configs", {})}
    path = out_dir / RESULTS_FILE
    old = load_results(path) if path.is_file() else None
    merged = merge_results(old, model_info, run_info, result["benchmarks"], result["skipped"], extras)
    write_json(path, merged)
    for task, records in result.get("samples", {}).items():
        write_jsonl(out_dir / f"samples_{task}.jsonl", records)
    for line in summary_lines(result, extras):
        log(line)
    log(f"wrote {path}")
    return merged


def write_jsonl(path: Path, records: list[dict]) -> None:
    from .results import _jsonable

    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n")
    tmp.replace(path)


def summary_lines(result: dict, extras: dict) -> list[str]:
    """The benchmark table, skips, calibration and scaling-law fit, as printed after a run."""
    lines = []
    rows = result.get("benchmarks", {})
    if rows:
        lines.append(f"{'benchmark':<14} {'metric':<30} {'value':>8} {'± stderr':>9} {'docs':>7} {'shots':>6}")
        subsets = {}
        for name, row in rows.items():
            err = f"{row['stderr']:.2f}" if row.get("stderr") is not None else "–"
            mark = "‡" if row.get("subset") else ""
            if mark:
                subsets[name] = row["subset"]
            lines.append(f"{name + mark:<14} {row['metric']:<30} {row['value']:8.2f} {err:>9} {row['n']:>7} "
                         f"{str(row['num_fewshot']):>6}")
        lines += [f"‡ {name}: {subset}" for name, subset in subsets.items()]
        sampling = next((row["sampling"] for row in rows.values() if row.get("sampling")), None)
        if sampling and sampling["decoding"] == "sampling":
            lines.append(f"code: {sampling['n']} samples per problem at temperature {sampling['temperature']} "
                         f"(top-p {sampling['top_p']}; {sampling['temperature_from']})")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"{name:<14} skipped: {reason}")
    cal = extras.get("calibration")
    if cal:
        per, top = cal["per_choice"], cal["top_label"]
        lines.append(f"MMLU calibration over {cal['questions']} questions: ECE per A/B/C/D option (Figure 4) "
                     f"{per['ece']:.4f}, top label {top['ece']:.4f}")
    sl = extras.get("scaling_law")
    if sl:
        f = sl["fit"]
        lines.append(f"scaling law: L(t) = {f['b']:.3f} + (t/{f['c']:.2f})^{f['a']:.3f}, R² {f['r2']:.4f} "
                     f"(report: 1.772 + (t/32.84)^-0.575)")
        if sl.get("warning"):
            lines.append(f"scaling law: {sl['warning']}")
    return lines
