"""Starting a run from the weights of a released model (`xmodel train --init-from MODEL_DIR`).

Any folder `from_pretrained` loads will do: an Xmodel checkpoint, a training checkpoint's ``model/`` folder, an
`xmodel import` output, or a Llama / MiniCPM layout (converted as `xmodel import` converts it, e.g. an
`xmodel export --to llama` output). The run's model section is the folder's own config: an override may
change what does not change a tensor's shape (e.g. dropout, the attention implementation), never the shape.
The optimizer starts fresh, so a short warmup (`train.schedule.warmup_steps`) is advisable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from ..errors import XmodelError
from ..model import XmodelConfig, XmodelForCausalLM
from .build import Built

# The fields that decide the shape of some tensor: a released model's weights fix them.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "tie_word_embeddings")


@lru_cache(maxsize=1)
def _source_model(model_dir: str) -> XmodelForCausalLM:
    """The folder's model in fp32 on the CPU, as an Xmodel (cached: the config and the weights are read once).
    The shared loader checks the config, the weight checksums and every file's header first."""
    from ..model.convert import as_xmodel, detect_layout, read_config
    from ..model.loading import is_xmodel_checkpoint, load_model_dir

    path = Path(model_dir)
    if not path.is_dir():
        raise XmodelError(f"--init-from {model_dir}: no such model directory")
    raw = read_config(path)
    if not is_xmodel_checkpoint(raw):
        detect_layout(raw, path)  # refuses a layout we cannot express, in one line
    return load_model_dir(path, "cpu", torch.float32, foreign=as_xmodel())


def source_model_config(model_dir: str | Path) -> XmodelConfig:
    """The folder's model config, as an Xmodel config (converted from a Llama / MiniCPM layout)."""
    return XmodelConfig.from_dict(_source_model(str(model_dir)).config.to_dict())


def check_same_shape(model_dir: str | Path, config: XmodelConfig) -> None:
    """Refuse a model config whose tensors would not have the folder's shapes (an override changed one)."""
    source = source_model_config(model_dir)
    for key in SHAPE_FIELDS:
        ours, theirs = getattr(config, key, None), getattr(source, key, None)
        if ours != theirs:
            raise XmodelError(f"model.{key} {ours!r}: --init-from {model_dir} has {key} {theirs!r}, and the "
                              f"weights fix it (drop the override)")


def load_init_weights(built: Built, model_dir: str | Path) -> None:
    """The folder's weights into the built (possibly wrapped or sharded) model, every tensor accounted for."""
    source = _source_model(str(model_dir))
    try:
        set_model_state_dict(built.model, source.state_dict(),
                             options=StateDictOptions(full_state_dict=True, strict=True))
    except (RuntimeError, ValueError, KeyError) as e:
        raise XmodelError(f"--init-from {model_dir}: its weights do not fit the model "
                          f"({str(e).splitlines()[0]})") from None
    _source_model.cache_clear()  # the run holds its own copy now
