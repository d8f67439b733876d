"""Code benchmarks (HumanEval, MBPP): programs built from generations, run in the sandbox, pass@k.

Generation goes through lm-eval (our task YAMLs in ``tasks/code``, prompts and stop sequences as lm-eval's
built-in humaneval/mbpp); scoring happens here, in `xmodel.eval.sandbox` subprocesses, never in the evaluating
process. With n samples per problem of which c pass, pass@k is the unbiased estimator of Chen et al. (2021):
1 − C(n−c, k) / C(n, k), averaged over problems.
"""

from __future__ import annotations

import numpy as np

from .sandbox import SandboxLimits, run_programs

# Set by `xmodel eval --code-timeout/--code-memory-mb`; lm-eval calls process_results without options.
LIMITS = SandboxLimits()
PARALLEL = 2


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): the numerically stable form of 1 - C(n-c,k)/C(n,k)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def humaneval_program(doc: dict, completion: str) -> str:
    """The prompt, the generated function body, the problem's tests, and the call of check()."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def mbpp_program(doc: dict, completion: str) -> str:
    """The generated code, the problem's setup code, then its assert statements."""
    tests = "\n".join(doc["test_list"])
    return f"{completion}\n\n{doc.get('test_setup_code') or ''}\n{tests}\n"


def _as_list(results) -> list[str]:
    # take_first gives one string per document, take_first_k a list of the k samples.
    first = results[0]
    return list(first) if isinstance(first, (list, tuple)) else [first]


def score_completions(programs: list[str]) -> list[bool]:
    return [r.passed for r in run_programs(programs, LIMITS, parallel=PARALLEL)]


PASS_KS = (1, 5, 10, 100)


def ks_for(n_samples: int) -> list[int]:
    """The k of pass@k reported for n samples per problem (the task's metric_list lists the same)."""
    return [k for k in PASS_KS if k <= n_samples]


def _pass_metrics(passed: list[bool]) -> dict[str, float]:
    n, c = len(passed), sum(passed)
    return {f"pass@{k}": pass_at_k(n, c, k) for k in ks_for(n)}


def humaneval_results(doc: dict, results) -> dict[str, float]:
    """lm-eval ``process_results`` for HumanEval: pass@k of this problem's samples (k ≤ n)."""
    completions = _as_list(results)
    return _pass_metrics(score_completions([humaneval_program(doc, c) for c in completions]))


def mbpp_results(doc: dict, results) -> dict[str, float]:
    """lm-eval ``process_results`` for MBPP."""
    completions = _as_list(results)
    return _pass_metrics(score_completions([mbpp_program(doc, c) for c in completions]))
