"""Every random generator a training process uses (Python, NumPy, torch CPU and CUDA), saved as data.

The generators' states are arrays and a few numbers: the arrays go into a safetensors file, the numbers into
JSON, so reading a checkpoint never unpickles anything (a pickled state could carry code).

    save_rng_state(ckpt / "rng" / "rank_0")     # writes rank_0.safetensors and rank_0.json
    load_rng_state(ckpt / "rng" / "rank_0")     # restores them (False when the files are absent)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import XmodelError

FORMAT = "xmodel-rng/1"


def save_rng_state(stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {"python": torch.tensor(py_state, dtype=torch.int64),
               "numpy": torch.from_numpy(np_keys.astype(np.int64)),
               "torch": torch.get_rng_state()}
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    tensors.update({f"cuda_{i}": s for i, s in enumerate(cuda)})
    save_file(tensors, f"{stem}.safetensors")
    meta = {"format": FORMAT, "python": {"version": py_version, "gauss_next": py_gauss},
            "numpy": {"kind": np_kind, "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                      "cached_gaussian": float(np_gauss)},
            "cuda_devices": len(cuda)}
    Path(f"{stem}.json").write_text(json.dumps(meta))


def load_rng_state(stem: Path) -> bool:
    tensor_file, meta_file = Path(f"{stem}.safetensors"), Path(f"{stem}.json")
    if not (tensor_file.is_file() and meta_file.is_file()):
        return False
    try:
        meta = json.loads(meta_file.read_text())
        tensors = load_file(tensor_file)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        py, npy = meta["python"], meta["numpy"]
        random.setstate((py["version"], tuple(tensors["python"].tolist()), py["gauss_next"]))
        np.random.set_state((npy["kind"], tensors["numpy"].numpy().astype(np.uint32), npy["pos"],
                             npy["has_gauss"], npy["cached_gaussian"]))
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[f"cuda_{i}"] for i in range(meta["cuda_devices"])]
    except (ValueError, KeyError, TypeError, OSError, SafetensorError) as e:
        raise XmodelError(f"{meta_file}: not a random-generator state ({e})") from None
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    return True
