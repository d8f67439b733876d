"""Evaluation: the reports' benchmark tables on lm-evaluation-harness with local files, sandboxed code pass@k,
MMLU calibration, the post-training scaling law on WikiText-2, and the comparison report.

Modules, each readable alone:

* `suites` – the benchmarks of each table and the lm-eval task (YAML in ``tasks/``) behind each;
* `local_files` – reads the data root's files in their own formats for those YAMLs;
* `harness` – runs benchmarks through lm-eval's HFLM wrapper; `run` adds calibration and settings;
* `sandbox`, `code` – generated programs run in limited subprocesses; pass@k;
* `calibration`, `scaling_law` – Xmodel-2 Figures 4 and 5;
* `results`, `report` – the per-model results file and the Markdown/HTML report;
* `training` – `evaluate_during_training`, the same suites on a model being trained;
* `agents` – ReAct agent episodes (HotpotQA, FEVER, AlfWorld, WebShop) and Table 4 of Xmodel-2.
"""

from .training import evaluate_during_training

__all__ = ["evaluate_during_training"]
