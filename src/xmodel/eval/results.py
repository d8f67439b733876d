"""The results file of one model: ``results.json`` in the model's output directory.

Successive `xmodel eval` runs on the same model merge into it (a benchmark evaluated again replaces its old
entry), each benchmark keeping the settings it was run with. Written through a temporary name, so a crash never
leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import XmodelError

RESULTS_FILE = "results.json"
FORMAT = "xmodel-eval-results/1"


def empty_results(model: dict) -> dict:
    return {"format": FORMAT, "model": model, "runs": [], "benchmarks": {}, "skipped": {}}


def read_results_file(path: str | Path, filename: str, fmt: str, missing_hint: str) -> dict:
    """A JSON results file of format `fmt` (or a directory holding `filename`), or a one-line error."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise XmodelError(f"{path}: {missing_hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise XmodelError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise XmodelError(f"{path}: not an {fmt.split('/')[0].replace('-', ' ')} file (expected format {fmt})")
    data["_path"] = str(path)
    return data


def load_results(path: Path) -> dict:
    """A results file (or a directory holding one), checked to be ours."""
    data = read_results_file(path, RESULTS_FILE, FORMAT, "no results file (run 'xmodel eval' first)")
    return data


def merge_results(old: dict | None, model: dict, run: dict, benchmarks: dict, skipped: dict,
                  extras: dict[str, Any]) -> dict:
    out = old if old is not None else empty_results(model)
    out.pop("_path", None)
    out["model"] = model
    out["runs"].append(run)
    for name, row in benchmarks.items():
        out["benchmarks"][name] = row
        out["skipped"].pop(name, None)
    for name, reason in skipped.items():
        if name not in out["benchmarks"]:
            out["skipped"][name] = reason
    out.update({k: v for k, v in extras.items() if v is not None})
    return out


def write_json(path: Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    return str(value)
