"""Code benchmarks (HumanEval, MBPP): programs built from generations, run in the sandbox, pass@k.

Two protocols, each under its own task names (YAMLs in ``tasks/code``):

* **bigcode** (``xmodel_humaneval``, ``xmodel_mbpp``; the ``code`` suite) – what Xmodel-2's Table 3 measured
  with bigcode-evaluation-harness. HumanEval: the prompt as bigcode's ``humaneval`` task gives it,
  ``doc["prompt"].strip()`` (its trailing newline removed), its stop sequences `BIGCODE_HUMANEVAL_STOPS`, the
  program ``prompt + completion + "\\n" + "\\n" + test + "\\n" + "check(entry_point)"``. MBPP: zero-shot,
  the docstring prompt of `mbpp_bigcode_prompt` (three double quotes, the description, the first test, three
  double quotes, each followed by a newline) on the 500 test problems (task_id 11–510), its stop sequences
  `BIGCODE_MBPP_STOPS`, the program ``prompt + completion + "\\n" + "\\n".join(test_list)`` (all three
  tests). Generation is capped at bigcode's ``max_length_generation`` (512 tokens, prompt included).
* **lm-eval** (``xmodel_humaneval_lmeval``, ``xmodel_mbpp_lmeval``; the ``code-lmeval`` suite) – lm-eval's own
  humaneval (unstripped prompt, five stop sequences) and mbpp (3-shot, ``[BEGIN]``/``[DONE]``).

Generation goes through lm-eval; scoring happens here, in `xmodel.eval.sandbox` subprocesses, never in the
evaluating process. With n samples per problem of which c pass, pass@k is the unbiased estimator of Chen et
al. (2021): 1 − C(n−c, k) / C(n, k), averaged over problems.
"""

from __future__ import annotations

import numpy as np

from .sandbox import SandboxLimits, run_programs

# Set by `xmodel eval --code-timeout/--code-memory-mb`; lm-eval calls process_results without options.
LIMITS = SandboxLimits()
PARALLEL = 2

# bigcode-evaluation-harness (bigcode_eval/tasks/humaneval.py, mbpp.py): the stop words its
# `_stop_at_stop_token` cuts a generation at (the earliest occurrence of any).
BIGCODE_HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
BIGCODE_MBPP_STOPS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
# bigcode's --max_length_generation default: prompt and completion together, in tokens.
BIGCODE_MAX_LENGTH = 512
# bigcode's sampling defaults (its README): temperature 0.2 for pass@1, 0.8 for pass@10 and pass@100; top-p 0.95.
BIGCODE_TEMPERATURE_PASS1 = 0.2
BIGCODE_TEMPERATURE_PASS10 = 0.8
BIGCODE_TOP_P = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): the numerically stable form of 1 - C(n-c,k)/C(n,k)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def stop_at_stop_token(text: str, stops) -> str:
    """The prefix of `text` before the earliest stop sequence (bigcode's ``_stop_at_stop_token``)."""
    cut = len(text)
    for stop in stops:
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


# ---------------------------------------------------------------- bigcode-evaluation-harness's protocol

def humaneval_bigcode_prompt(doc: dict) -> str:
    """bigcode's ``humaneval`` prompt: ``doc["prompt"].strip()``."""
    return doc["prompt"].strip()


def humaneval_bigcode_program(doc: dict, completion: str) -> str:
    """bigcode: candidate = prompt + completion; program = candidate + "\\n" + reference, where the reference is
    "\\n" + test + "\\n" + "check(entry_point)"."""
    reference = "\n" + doc["test"] + "\n" + f"check({doc['entry_point']})"
    return humaneval_bigcode_prompt(doc) + completion + "\n" + reference


def mbpp_bigcode_prompt(doc: dict) -> str:
    """bigcode's ``mbpp`` prompt (InCoder's): a docstring with the description and the first test."""
    return f'"""\n{doc["text"]}\n{doc["test_list"][0]}\n"""\n'


def mbpp_tests(doc: dict) -> str:
    return "\n".join(doc["test_list"])


def mbpp_bigcode_program(doc: dict, completion: str) -> str:
    """bigcode: prompt + completion, "\\n", then every assert of ``test_list`` (no setup code, as bigcode)."""
    return mbpp_bigcode_prompt(doc) + completion + "\n" + mbpp_tests(doc)


# ---------------------------------------------------------------- lm-eval's protocol

def humaneval_program(doc: dict, completion: str) -> str:
    """lm-eval's humaneval: the (unstripped) prompt, the generated body, the problem's tests, check()."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def mbpp_program(doc: dict, completion: str) -> str:
    """lm-eval's mbpp: the generated code, the problem's setup code, then its assert statements."""
    tests = "\n".join(doc["test_list"])
    return f"{completion}\n\n{doc.get('test_setup_code') or ''}\n{tests}\n"


# ---------------------------------------------------------------- scoring

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


def sampling_settings(n_samples: int, temperature: float | None = None, top_p: float = BIGCODE_TOP_P) -> dict:
    """How code completions are drawn: greedy for n = 1; otherwise sampling at `temperature`, by default
    bigcode's (0.2 when only pass@1-style estimates are possible, n < 10; 0.8 for pass@10/pass@100)."""
    if n_samples <= 1:
        return {"n": 1, "decoding": "greedy", "metric": "pass@1"}
    if temperature is None:
        temperature = BIGCODE_TEMPERATURE_PASS1 if n_samples < 10 else BIGCODE_TEMPERATURE_PASS10
        rule = ("bigcode default: temperature 0.2 for pass@1-style sampling (n < 10), 0.8 for pass@10/pass@100 "
                "(n ≥ 10)")
    else:
        rule = "--code-temperature"
    return {"n": n_samples, "decoding": "sampling", "temperature": temperature, "top_p": top_p,
            "temperature_from": rule, "metrics": [f"pass@{k}" for k in ks_for(n_samples)]}


def _pass_metrics(passed: list[bool]) -> dict[str, float]:
    n, c = len(passed), sum(passed)
    return {f"pass@{k}": pass_at_k(n, c, k) for k in ks_for(n)}


def humaneval_bigcode_results(doc: dict, results) -> dict[str, float]:
    """lm-eval ``process_results`` for HumanEval under bigcode's protocol: pass@k (k ≤ n)."""
    completions = _as_list(results)
    return _pass_metrics(score_completions([humaneval_bigcode_program(doc, c) for c in completions]))


def mbpp_bigcode_results(doc: dict, results) -> dict[str, float]:
    """lm-eval ``process_results`` for MBPP under bigcode's protocol."""
    completions = _as_list(results)
    return _pass_metrics(score_completions([mbpp_bigcode_program(doc, c) for c in completions]))


def humaneval_results(doc: dict, results) -> dict[str, float]:
    """lm-eval ``process_results`` for HumanEval under lm-eval's protocol."""
    completions = _as_list(results)
    return _pass_metrics(score_completions([humaneval_program(doc, c) for c in completions]))


def mbpp_results(doc: dict, results) -> dict[str, float]:
    """lm-eval ``process_results`` for MBPP under lm-eval's protocol."""
    completions = _as_list(results)
    return _pass_metrics(score_completions([mbpp_program(doc, c) for c in completions]))
