"""The benchmarks of the reports' tables, grouped into suites, and how each one is read from lm-eval's output.

A `Benchmark` names our lm-eval task (or group) in ``tasks/``, the metric the reports print for it, and the
column it fills. The files a benchmark needs are read from its task YAMLs (``dataset_kwargs``), so a
benchmark whose files are absent is skipped with a message naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from ..errors import XmodelError

TASKS_DIR = Path(__file__).with_name("tasks")


@dataclass(frozen=True)
class Benchmark:
    name: str           # our short name (results JSON key)
    task: str           # lm-eval task or group in TASKS_DIR
    column: str         # column header in the reports' tables
    metric: str         # lm-eval metric the reports print
    filter: str = "none"
    shots: str = "0-shot"
    builtin: str = ""   # lm-eval's own task of the same definition (for --source hub); "" = none
    subset: str = ""    # set when the data kit holds only part of the benchmark: what part (labelled in tables)
    protocol: str = ""  # whose definition the task follows, when it is not lm-eval's built-in one

    @property
    def key(self) -> str:
        return f"{self.metric},{self.filter}"

    @property
    def is_code(self) -> bool:
        """Scored by running programs (pass@k); always evaluated on local files, in our sandbox."""
        return self.metric.startswith("pass@")


COMMONSENSE = [
    Benchmark("arc_challenge", "xmodel_arc_challenge", "ARC-c", "acc", builtin="arc_challenge"),
    Benchmark("arc_easy", "xmodel_arc_easy", "ARC-e", "acc", builtin="arc_easy"),
    Benchmark("boolq", "xmodel_boolq", "Boolq", "acc", builtin="boolq"),
    Benchmark("hellaswag", "xmodel_hellaswag", "HS.", "acc", builtin="hellaswag"),
    Benchmark("openbookqa", "xmodel_openbookqa", "OB.", "acc", builtin="openbookqa"),
    Benchmark("piqa", "xmodel_piqa", "PiQA", "acc", builtin="piqa"),
    Benchmark("sciq", "xmodel_sciq", "SciQ", "acc", builtin="sciq"),
    Benchmark("winogrande", "xmodel_winogrande", "Wino.", "acc", builtin="winogrande"),
]
REASONING = [
    Benchmark("gsm8k", "xmodel_gsm8k", "GSM8K", "exact_match", "strict-match", "5-shot", builtin="gsm8k"),
    Benchmark("math", "xmodel_math", "MATH", "exact_match", "none", "4-shot", builtin="minerva_math"),
    Benchmark("bbh", "xmodel_bbh", "BBH", "exact_match", "get-answer", "3-shot", builtin="bbh_cot_fewshot"),
    Benchmark("mmlu", "xmodel_mmlu", "MMLU", "acc", "none", "0-shot", builtin="mmlu"),
]
# Xmodel-2 Table 3 scored HumanEval and MBPP with bigcode-evaluation-harness: its prompts, stop sequences and
# programs (code.py). lm-eval's own humaneval/mbpp (other prompts; MBPP 3-shot) stay under their own names.
BIGCODE = "bigcode-evaluation-harness"
CODE = [
    Benchmark("humaneval", "xmodel_humaneval", "HumanEval", "pass@1", "none", "0-shot", protocol=BIGCODE),
    Benchmark("mbpp", "xmodel_mbpp", "MBPP", "pass@1", "none", "0-shot", protocol=BIGCODE),
]
CODE_LMEVAL = [
    Benchmark("humaneval_lmeval", "xmodel_humaneval_lmeval", "HumanEval (lm-eval)", "pass@1", "none", "0-shot",
              builtin="humaneval"),
    Benchmark("mbpp_lmeval", "xmodel_mbpp_lmeval", "MBPP (lm-eval)", "pass@1", "none", "3-shot", builtin="mbpp"),
]
# C-Eval and CMMLU: a table of their own (neither report prints them).
CHINESE = [
    Benchmark("cmmlu", "xmodel_cmmlu", "CMMLU", "acc", builtin="cmmlu"),
    Benchmark("ceval", "xmodel_ceval", "C-Eval", "acc", builtin="ceval-valid"),
]
# Xmodel-LM's "Chinese Ability" table: its average (40.95) is the mean of these three, 0-shot.
XMODEL_LM_CHINESE = [
    Benchmark("arc_zh", "xmodel_arc_zh", "ARC-zh", "acc", builtin="arc_zh"),
    Benchmark("xcopa_zh", "xmodel_xcopa_zh", "XCOPA-zh", "acc", builtin="xcopa_zh"),
    Benchmark("xnli_zh", "xmodel_xnli_zh", "XNLI-zh", "acc", builtin="xnli_zh"),
]
TRIVIAQA = Benchmark("triviaqa", "xmodel_triviaqa", "TriviaQA", "exact_match", "remove_whitespace", "0-shot",
                     builtin="triviaqa",
                     subset="3,000-question sample of the validation set (llm-foundry's triviaqa_sm_sub), "
                            "not the full set")
# Xmodel-LM's "Commonsense Reasoning" table: Xmodel-2's Table 2 plus TriviaQA (its average 51.41 spans nine).
XMODEL_LM_COMMONSENSE = [*COMMONSENSE[:7], TRIVIAQA, COMMONSENSE[7]]
# A fast loglikelihood-only suite for evaluation during training.
QUICK = [COMMONSENSE[1], COMMONSENSE[3], COMMONSENSE[5]]

SUITES: dict[str, list[Benchmark]] = {
    "commonsense": COMMONSENSE, "reasoning": REASONING, "code": CODE, "code-lmeval": CODE_LMEVAL,
    "chinese": CHINESE, "xmodel-lm-commonsense": XMODEL_LM_COMMONSENSE, "xmodel-lm-chinese": XMODEL_LM_CHINESE,
    "quick": QUICK,
}
# `--suite all`: every table of the reports (Xmodel-2 Tables 2 and 3, Xmodel-LM's commonsense and Chinese
# tables) and C-Eval/CMMLU; not lm-eval's code variants nor the quick suite (a subset of commonsense).
ALL_SUITES = ["commonsense", "reasoning", "code", "chinese", "xmodel-lm-commonsense", "xmodel-lm-chinese"]
BENCHMARKS = {b.name: b for benches in SUITES.values() for b in benches}


def sampled(benchmark: Benchmark) -> Benchmark:
    """The sampled pass@k variant of a code benchmark (its task keeps all n samples)."""
    return replace(benchmark, task=f"{benchmark.task}_sampled", metric="pass@1", filter="all-samples")


def suite_benchmarks(suites: list[str], only: list[str] | None = None) -> list[Benchmark]:
    """The benchmarks of the named suites (``all`` = every suite), optionally restricted to some names."""
    names = ALL_SUITES if "all" in suites else suites
    out: list[Benchmark] = []
    for suite in names:
        if suite not in SUITES:
            raise XmodelError(f"--suite {suite}: unknown (known: {', '.join([*SUITES, 'all'])})")
        out += [b for b in SUITES[suite] if b not in out]
    if only:
        unknown = sorted(set(only) - {b.name for b in out})
        if unknown:
            raise XmodelError(f"--tasks {unknown[0]}: not in the chosen suites (known: "
                              f"{', '.join(b.name for b in out)})")
        out = [b for b in out if b.name in only]
    return out


@lru_cache(maxsize=1)
def task_index():
    """lm-eval's index of our task directory (names → entries with their YAML configs)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False).task_index


def leaf_tasks(task: str) -> list[str]:
    """The tasks a group expands to (a task is its own single leaf)."""
    index = task_index()
    if task not in index:
        raise XmodelError(f"{task}: no such task in {TASKS_DIR}")
    entry = index[task]
    members = entry.cfg.get("task") if entry.cfg and "group" in entry.cfg else None
    if isinstance(members, list):
        return [leaf for member in members for leaf in leaf_tasks(member)]
    return [task]


def task_files(task: str) -> list[str]:
    """Data-root-relative files every leaf task of `task` reads."""
    from .local_files import required_files

    index = task_index()
    files: list[str] = []
    for leaf in leaf_tasks(task):
        for rel in required_files(index[leaf].cfg.get("dataset_kwargs")):
            if rel not in files:
                files.append(rel)
    return files


def missing_files(benchmark: Benchmark, data_root: Path) -> list[str]:
    return [rel for rel in task_files(benchmark.task) if not (data_root / rel).is_file()]
