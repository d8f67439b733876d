"""Checks a local checkpoint against its config before transformers loads it.

transformers reports a shape mismatch in a log table and then raises a generic error; we raise first, with
the tensor's name, both shapes and the config fields that set them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import XmodelError

SHAPE_FIELDS = {
    "embed_tokens": "vocab_size, hidden_size", "lm_head": "vocab_size, hidden_size",
    "q_proj": "hidden_size, num_attention_heads", "o_proj": "hidden_size, num_attention_heads",
    "k_proj": "hidden_size, num_key_value_heads", "v_proj": "hidden_size, num_key_value_heads",
    "gate_proj": "hidden_size, intermediate_size", "up_proj": "hidden_size, intermediate_size",
    "down_proj": "hidden_size, intermediate_size", "norm": "hidden_size", "layernorm": "hidden_size",
}


# A model folder's config.json must name these: transformers would fill a missing one with its class default
# (the 1.2B shape), which reads fine and describes another model.
REQUIRED_CONFIG_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads")


def read_model_config(model_dir: str | Path) -> dict:
    """The config.json of a model folder as a dict, or a one-line error naming the file and what is wrong."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise XmodelError(f"{model_dir}: not a model directory (no config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise XmodelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise XmodelError(f"{path}: not a model config (a JSON object is expected)")
    missing = [k for k in REQUIRED_CONFIG_FIELDS if k not in config]
    if missing:
        raise XmodelError(f"{path}: missing {', '.join(missing)} (the model's shape)")
    return config


def checkpoint_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, read from the safetensors headers only (no weights are loaded)."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return {}
    shapes = {}
    for name in files:
        with safe_open(str(model_dir / name), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def check_checkpoint_matches_config(model_cls, model_dir: Path, config) -> None:
    shapes = checkpoint_shapes(model_dir)
    if not shapes:
        return
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_cls(config).state_dict().items()}
    for key, shape in shapes.items():
        want = expected.get(key)
        if want is not None and want != shape:
            fields = next((v for k, v in SHAPE_FIELDS.items() if k in key), "the architecture fields")
            raise XmodelError(f"{model_dir}: tensor {key} has shape {list(shape)} but config.json ({fields}) "
                              f"implies {list(want)}")
