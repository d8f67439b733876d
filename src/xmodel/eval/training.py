"""A small benchmark suite every N training steps, through the same tasks and harness as `xmodel eval`.

    from xmodel.eval.training import evaluate_during_training
    metrics = evaluate_during_training(model, tokenizer, suite="quick", limit=50)
    # {"eval/arc_easy/acc": 41.2, "eval/hellaswag/acc": 30.8, "eval/piqa/acc": 60.1, "eval/seconds": 12.3}

The model is evaluated as it is (same device and dtype, no copy) and put back in training mode afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data.root import data_root as resolve_data_root
from .run import EvalSettings, evaluate_model
from .suites import suite_benchmarks


def evaluate_during_training(model, tokenizer, suite: str | list[str] = "quick", limit: int | float | None = 50,
                             data_root: str | Path | None = None, batch_size: int = 8,
                             max_gen_toks: int | None = 64, seed: int = 1234) -> dict[str, float]:
    """Run `suite` (default: ARC-Easy, HellaSwag, PIQA; any suite name or list of them) on `limit` documents
    per task and return flat metrics {"eval/<benchmark>/<metric>": value in %}.

    Benchmarks whose files are missing are left out (and reported under "eval/skipped").
    """
    suites = [suite] if isinstance(suite, str) else list(suite)
    benchmarks = suite_benchmarks(suites)
    root = resolve_data_root(data_root)
    device = next(model.parameters()).device
    settings = EvalSettings(limit=limit, batch_size=batch_size, device=str(device), max_gen_toks=max_gen_toks,
                            seed=seed)
    was_training = model.training
    start = time.perf_counter()
    try:
        out = evaluate_model(model, tokenizer, benchmarks, root, settings)
    finally:
        model.train(was_training)
    metrics: dict[str, float] = {}
    for name, row in out["benchmarks"].items():
        metric = row["metric"].split(",")[0]
        metrics[f"eval/{name}/{metric}"] = row["value"]
    metrics["eval/seconds"] = time.perf_counter() - start
    if out["skipped"]:
        metrics["eval/skipped"] = float(len(out["skipped"]))
    return metrics
