"""One evaluation of one model: benchmarks through lm-eval, MMLU calibration from the same run's log-probs, and
the settings that produced the numbers. Used by `xmodel eval` and by evaluation during training.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import XmodelError
from .suites import Benchmark


@dataclass
class EvalSettings:
    limit: int | float | None = None
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    add_bos_token: bool = False
    max_gen_toks: int | None = None
    code_samples: int = 1
    code_temperature: float | None = None  # None: bigcode's default for the number of samples (code.py)
    seed: int = 1234
    source: str = "local"  # "hub": lm-eval's built-in tasks on hub data (needs a network)

    def to_dict(self) -> dict:
        return asdict(self)


def versions() -> dict[str, str]:
    import torch
    import transformers

    from .. import __version__

    out = {"xmodel": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import lm_eval

        out["lm_eval"] = getattr(lm_eval, "__version__", "?")
    except ImportError:
        pass
    return out


def evaluate_model(model, tokenizer, benchmarks: list[Benchmark], data_root: Path, settings: EvalSettings,
                   calibration_plot: Path | None = None, log_samples: bool = False) -> dict:
    """Run `benchmarks`; when MMLU is among them, add its calibration (per choice, as Xmodel-2's Figure 4, and
    top label: ECE, bins, optional PNG). ``settings`` are those of the run, with any generation budget the
    model's context capped (`harness.build_lm`) and, when code runs, how its completions were drawn.

    With `log_samples`, lm-eval's per-document records are kept under ``samples`` (task → list).
    """
    from .calibration import mmlu_calibration, reliability_diagram
    from .code import sampling_settings
    from .harness import build_lm, generation_budget_cap, lm_eval_context, run_benchmarks

    context = lm_eval_context(model, tokenizer)
    if generation_budget_cap(context) < 1:  # refused here, before lm-eval starts: it would fail deep in the run
        raise XmodelError(f"the model's context (max_position_embeddings) of {context} token(s) is too short to "
                          "evaluate (no room for a prompt and a generated token)")
    lm = build_lm(model, tokenizer, batch_size=settings.batch_size, add_bos_token=settings.add_bos_token)
    wants_calibration = any(b.name == "mmlu" for b in benchmarks)
    out = run_benchmarks(lm, benchmarks, data_root, limit=settings.limit, max_gen_toks=settings.max_gen_toks,
                         code_samples=settings.code_samples, code_temperature=settings.code_temperature,
                         log_samples=wants_calibration or log_samples, seed=settings.seed,
                         source=settings.source)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    used = settings.to_dict()
    if any(b.is_code for b in benchmarks):
        used["code_sampling"] = sampling_settings(settings.code_samples, settings.code_temperature)
        if settings.code_samples > 1:
            used["code_temperature"] = used["code_sampling"]["temperature"]
    if lm.capped:  # the model's context capped some generation budgets: the numbers are for the smaller ones
        used["max_gen_toks_capped"] = {"to": generation_budget_cap(lm.max_length), "context": lm.max_length,
                                       "tasks": dict(lm.capped)}
    out["settings"] = used
    for row in out["benchmarks"].values():
        row["settings"] = dict(used)
        row["date"] = date
    if wants_calibration and "mmlu" in out["benchmarks"]:
        mmlu_task = out["benchmarks"]["mmlu"]["task"]
        mmlu_samples = {t: recs for t, recs in out["samples"].items() if t.startswith(f"{mmlu_task}_")}
        result = mmlu_calibration(mmlu_samples)
        out["calibration"] = {"benchmark": "mmlu", **result.to_dict()}
        if calibration_plot is not None:
            reliability_diagram(result, calibration_plot)
            out["calibration"]["plot"] = calibration_plot.name
    if not log_samples:
        out.pop("samples", None)
    return out
