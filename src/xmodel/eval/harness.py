"""Runs benchmarks through lm-evaluation-harness: our model in its `HFLM` wrapper, our local task YAMLs.

    lm = build_lm(model, tokenizer, batch_size=8)
    out = run_benchmarks(lm, suite_benchmarks(["commonsense"]), data_root, limit=20)

`run_benchmarks` returns plain data: per benchmark the reports' metric (in %), its standard error, every
lm-eval metric of the task, the number of documents and shots; benchmarks whose files are missing are listed
under ``skipped`` with the reason. Nothing is written here (the CLI and the trainer decide where results go).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import XmodelError
from .suites import TASKS_DIR, Benchmark, missing_files, sampled, task_index


class _DropCustomDatasetHint(logging.Filter):
    """lm-eval warns on every task with a custom_dataset that kwargs can be passed with --metadata; we do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def require_lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (needs accelerate)
    except ImportError as e:
        raise XmodelError(f"evaluation needs lm-evaluation-harness and accelerate ({e.name} is missing): "
                          "pip install 'xmodel[eval]'") from None
    logging.getLogger("lm_eval.api.task").addFilter(_DropCustomDatasetHint())


def build_lm(model, tokenizer, batch_size: int = 8, device: str | None = None, max_length: int | None = None,
             add_bos_token: bool = False):
    """lm-eval's HFLM around an in-memory model and tokenizer (any causal LM, ours included).

    The tokenizer gets a pad token if it has none (HFLM pads batches); BOS is not prepended unless asked
    (`add_bos_token`), lm-eval's default for non-Gemma models: the setting is saved with the results.
    """
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if device is not None:
        model = model.to(device)
    model.eval()
    kwargs: dict[str, Any] = {}
    if max_length is not None:
        kwargs["max_length"] = max_length
    return _context_capped_hflm()(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                                  add_bos_token=add_bos_token, **kwargs)


def lm_eval_context(model, tokenizer) -> int:
    """The context lm-eval gives a model: what `HFLM.max_length` resolves to when it is not set."""
    from lm_eval.models.utils import DEFAULT_MAX_LENGTH, resolve_max_length

    return resolve_max_length(model.config, tokenizer, default=DEFAULT_MAX_LENGTH)


def generation_budget_cap(context: int) -> int:
    """The most tokens a generation request may ask for from a model of `context` positions: half of them, so
    the prompt (which lm-eval truncates from the left to what is left) keeps the other half."""
    return context // 2


# The names lm-eval accepts for a request's generation budget, in its order of priority.
BUDGET_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
# A generation kwarg of our code tasks: prompt and completion together may hold at most this many tokens, per
# request (bigcode-evaluation-harness's --max_length_generation, passed to HF generate as max_length with one
# prompt per call). lm-eval itself only knows a budget of new tokens for a whole padded batch.
TOTAL_LENGTH_KEY = "xmodel_max_length"


@functools.cache
def _context_capped_hflm():
    """HFLM whose generation requests fit the model's context: lm-eval asserts, deep in a run, that a task's
    budget (HumanEval and BBH ask for 1024 tokens) is below the context; here a larger budget is capped to
    `generation_budget_cap` instead, with a note, and recorded in `capped` (task → its own budget).

    A request whose generation kwargs hold `TOTAL_LENGTH_KEY` (our bigcode code tasks) also stops where
    bigcode-evaluation-harness would: at that many tokens, prompt included, row by row within a batch."""
    import torch
    from lm_eval.models.huggingface import HFLM

    class ContextCappedHFLM(HFLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.capped: dict[str, int] = {}

        def generate_until(self, requests, disable_tqdm: bool = False):
            cap = generation_budget_cap(self.max_length)
            for request in requests:
                context, gen_kwargs = request.args
                budget = next((gen_kwargs[k] for k in BUDGET_KEYS if gen_kwargs.get(k)), self.max_gen_toks)
                if budget <= cap:
                    continue
                if request.task_name not in self.capped:
                    print(f"note: {request.task_name}: generation budget of {budget} tokens capped to {cap} "
                          f"(half the model's {self.max_length}-token context; the prompt keeps the rest)")
                self.capped[request.task_name] = budget
                request.arguments = (context, {**gen_kwargs, "max_gen_toks": cap})
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            total = generation_kwargs.pop(TOTAL_LENGTH_KEY, None)
            if total is None:
                return super()._model_generate(context, max_length, stop, **generation_kwargs)
            # Each row (left-padded) may grow to `total` tokens, prompt included: its budget is total - prompt.
            start = context.shape[1]
            mask = generation_kwargs.get("attention_mask")
            prompt = mask.sum(dim=1) if mask is not None else torch.full((context.shape[0],), start)
            budgets = (int(total) - prompt).clamp(min=1).to(context.device)
            max_length = min(max_length, start + int(budgets.max()))
            out = super()._model_generate(context, max_length, stop, **generation_kwargs)
            # Tokens past a row's own budget become padding, which lm-eval's decoding drops.
            beyond = torch.arange(out.shape[1], device=out.device)[None, :] >= (start + budgets)[:, None]
            return out.masked_fill(beyond, self.tokenizer.pad_token_id)

    return ContextCappedHFLM


def missing_benchmark_files(benchmarks: list[Benchmark], data_root: Path,
                            source: str = "local") -> dict[str, list[str]]:
    """Benchmark name → the files it needs that `data_root` lacks, for the benchmarks that cannot run (the hub
    source reads lm-eval's own data for the benchmarks that have a built-in task, but not the code benchmarks,
    whose scoring is ours)."""
    out = {}
    for b in benchmarks:
        if source == "hub" and b.builtin and not b.is_code:
            continue
        missing = missing_files(b, data_root)
        if missing:
            out[b.name] = missing
    return out


def _task_config(task: str) -> dict:
    """Our task's YAML as a config dict (includes and !function references resolved)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_index()[task]
    return copy.deepcopy(load_yaml(entry.yaml_path, resolve_func=True))


def sampled_code_spec(benchmark: Benchmark, n: int, temperature: float, top_p: float = 0.95) -> dict:
    """The sampled code task with n samples per problem, its filter keeping all n, and pass@k for k ≤ n."""
    from .code import ks_for

    cfg = _task_config(sampled(benchmark).task)
    cfg["repeats"] = n
    cfg["generation_kwargs"] = dict(cfg["generation_kwargs"], do_sample=True, temperature=temperature, top_p=top_p)
    cfg["filter_list"] = [{"name": "all-samples", "filter": [{"function": "take_first_k", "k": n}]}]
    cfg["metric_list"] = [{"metric": f"pass@{k}", "aggregation": "mean", "higher_is_better": True}
                          for k in ks_for(n)]
    return cfg


def _result_row(benchmark: Benchmark, results: dict) -> dict:
    task_name = benchmark.task
    row = results["results"][task_name]
    metrics = {k: v for k, v in row.items() if k not in ("alias", "name", " ", "sample_len")
               and isinstance(v, (int, float))}
    if benchmark.key not in row:
        raise XmodelError(f"{benchmark.name}: lm-eval reported no {benchmark.key} (got {', '.join(metrics)})")
    value = row[benchmark.key]
    stderr = row.get(f"{benchmark.metric}_stderr,{benchmark.filter}")
    leaves = _leaves(results.get("group_subtasks", {}), task_name)
    n_samples = results.get("n-samples", {})
    n_docs = sum(n_samples.get(t, {}).get("effective", 0) for t in leaves)
    n_total = sum(n_samples.get(t, {}).get("original", 0) for t in leaves)
    shots = {results.get("n-shot", {}).get(t) for t in leaves}
    out = {"task": task_name, "column": benchmark.column, "metric": benchmark.key,
           "value": 100.0 * value, "stderr": None if stderr in (None, "N/A") else 100.0 * stderr,
           "n": n_docs, "n_total": n_total, "num_fewshot": shots.pop() if len(shots) == 1 else sorted(shots),
           "lm_eval_metrics": metrics}
    if benchmark.subset:
        out["subset"] = benchmark.subset
    if benchmark.protocol:
        out["protocol"] = benchmark.protocol
    return out


def _leaves(group_subtasks: dict[str, list[str]], name: str) -> list[str]:
    children = group_subtasks.get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in _leaves(group_subtasks, child)]


def run_benchmarks(lm, benchmarks: list[Benchmark], data_root: Path, limit: int | float | None = None,
                   max_gen_toks: int | None = None, code_samples: int = 1, code_temperature: float | None = None,
                   log_samples: bool = False, seed: int = 1234, bootstrap_iters: int = 1000,
                   source: str = "local") -> dict:
    """Evaluate `lm` on the benchmarks whose files exist; skip the others with a message.

    ``source="hub"`` runs lm-eval's built-in task of each benchmark instead (same prompts and metrics, data
    downloaded from the Hugging Face hub; needs a network). Code benchmarks always read local files, because
    their scoring is ours (the sandbox), and so do benchmarks with no built-in task.

    With ``code_samples`` n > 1 the code benchmarks sample n completions per problem at `code_temperature`
    (None: bigcode's default for n, `code.sampling_settings`) and report pass@k for k ≤ n.
    """
    from .code import sampling_settings

    if source not in ("local", "hub"):
        raise XmodelError(f"source {source!r}: expected 'local' or 'hub'")
    if source == "local":  # our tasks read local files and the model is in memory: nothing may wait on the hub
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    skipped: dict[str, str] = {}
    runnable: list[tuple[Benchmark, Any]] = []
    missing_by_name = missing_benchmark_files(benchmarks, data_root, source)
    for b in benchmarks:
        missing = missing_by_name.get(b.name)
        if missing:
            more = f" ({len(missing)} files, first {missing[0]})" if len(missing) > 1 else f" ({missing[0]})"
            skipped[b.name] = f"benchmark files not found under {data_root}{more}"
            print(f"skipped {b.name}: {skipped[b.name]}")
            continue
        if source == "hub" and b.builtin and not b.is_code:
            hub = replace(b, task=b.builtin, subset="")  # the hub copy is the whole benchmark
            runnable.append((hub, hub.task))
            continue
        if b.is_code and code_samples > 1:
            sampling = sampling_settings(code_samples, code_temperature)
            runnable.append((sampled(b), sampled_code_spec(b, code_samples, sampling["temperature"],
                                                           sampling["top_p"])))
        else:
            runnable.append((b, b.task))
    out: dict[str, Any] = {"benchmarks": {}, "skipped": skipped, "samples": {}}
    if not runnable:
        return out
    # Our directory is indexed after lm-eval's own, so the built-ins (hub source) and ours never collide.
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=source == "hub",
                          metadata={"data_root": str(data_root)})
    gen_kwargs = {"max_gen_toks": max_gen_toks} if max_gen_toks else None
    results = simple_evaluate(model=lm, tasks=[spec for _, spec in runnable], task_manager=manager, limit=limit,
                              gen_kwargs=gen_kwargs, log_samples=log_samples, random_seed=seed,
                              numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                              bootstrap_iters=bootstrap_iters, confirm_run_unsafe_code=True)
    for b, _ in runnable:
        out["benchmarks"][b.name] = _result_row(b, results)
        if b.is_code:
            out["benchmarks"][b.name]["sampling"] = sampling_settings(code_samples, code_temperature)
    if log_samples:
        out["samples"] = results.get("samples", {})
    out["configs"] = {name: {k: cfg.get(k) for k in ("num_fewshot", "generation_kwargs", "repeats",
                                                    "target_delimiter", "fewshot_delimiter")}
                      for name, cfg in results.get("configs", {}).items()}
    return out

