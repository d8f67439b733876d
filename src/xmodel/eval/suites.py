"""The benchmarks of the reports' tables, grouped into suites, and how each one is read from lm-eval's output.

A `Benchmark` names our lm-eval task (or group) in ``tasks/``, the metric the reports print for it, and the
column it fills. The files a benchmark needs are read from its task YAMLs (``dataset_kwargs``), so a
benchmark whose files are absent is skipped with a message naming them.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    builtin: str = ""   # lm-eval's own task of the same definition (for --source hub)

    @property
    def key(self) -> str:
        return f"{self.metric},{self.filter}"


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
CODE = [
    Benchmark("humaneval", "xmodel_humaneval", "HumanEval", "pass@1", "none", "pass@1", builtin="humaneval"),
    Benchmark("mbpp", "xmodel_mbpp", "MBPP", "pass@1", "none", "pass@1", builtin="mbpp"),
]
CHINESE = [
    Benchmark("cmmlu", "xmodel_cmmlu", "CMMLU", "acc", builtin="cmmlu"),
    Benchmark("ceval", "xmodel_ceval", "C-Eval", "acc", builtin="ceval-valid"),
]
# A fast loglikelihood-only suite for evaluation during training.
QUICK = [COMMONSENSE[1], COMMONSENSE[3], COMMONSENSE[5]]

SUITES: dict[str, list[Benchmark]] = {
    "commonsense": COMMONSENSE, "reasoning": REASONING, "code": CODE, "chinese": CHINESE, "quick": QUICK,
}
# `--suite all`: every table of the reports (the quick suite is a subset of commonsense).
ALL_SUITES = ["commonsense", "reasoning", "code", "chinese"]
BENCHMARKS = {b.name: b for suite in ALL_SUITES for b in SUITES[suite]}


def sampled(benchmark: Benchmark) -> Benchmark:
    """The sampled pass@k variant of a code benchmark (its task keeps all n samples)."""
    return Benchmark(benchmark.name, f"{benchmark.task}_sampled", benchmark.column, "pass@1", "all-samples",
                     benchmark.shots, benchmark.builtin)


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
