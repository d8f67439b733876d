"""Files written whole or not at all.

Each file is written under a temporary name beside its target and renamed into place, so a killed task never
leaves a truncated file behind that a rerun (which skips finished tasks) would trust.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_array_atomic(path: Path, array: np.ndarray) -> None:
    """One array as ``.npy`` (the temporary name keeps the suffix, or numpy would append one)."""
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def save_arrays_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Several named arrays as one ``.npz``."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
