"""Import a llama-architecture GGUF file (many small models are released only so) as an Xmodel checkpoint.

The file is read by transformers' own GGUF loader (`from_pretrained(..., gguf_file=...)`, which dequantises
through the `gguf` package: f32, f16, bf16, q8_0, q4_0, q4_1 and the k-quants, and undoes llama.cpp's Q/K row
permutation), together with the tokenizer it carries. The Llama model it gives is then imported like any Llama
checkpoint (neutral μP multipliers, the same logits).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from ..errors import XmodelError
from ..model.configuration_xmodel import XmodelConfig
from .importing import import_checkpoint


def read_gguf_architecture(path: Path) -> str:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise XmodelError(f"{path}: not a readable GGUF file ({reason})") from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise XmodelError(f"{path}: no general.architecture in the GGUF metadata")
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")


def import_gguf(path: str | Path, out: str | Path, dtype: str | None = None) -> tuple[Path, str, XmodelConfig]:
    """`path` (a .gguf file) → the Xmodel checkpoint directory `out`, dequantised to `dtype` (default float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, out = Path(path), Path(out)
    if not path.is_file():
        raise XmodelError(f"{path}: no such GGUF file")
    if out.exists() and any(out.iterdir()):
        raise XmodelError(f"{out}: exists and is not empty")
    arch = read_gguf_architecture(path)
    if arch != "llama":
        raise XmodelError(f"{path}: architecture {arch!r}; only llama-architecture GGUF files can be imported")
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, OSError, KeyError, NotImplementedError, RuntimeError) as e:
        raise XmodelError(f"{path}: transformers could not load it ({str(e).splitlines()[0]})") from None
    with tempfile.TemporaryDirectory(prefix="xmodel-gguf-") as staging:
        write_plain_checkpoint(model, Path(staging))
        tokenizer.save_pretrained(staging)
        del model
        out, _, config = import_checkpoint(staging, out, dtype=dtype or "float32")
    return out, "llama GGUF", config


def write_plain_checkpoint(model, folder: Path) -> None:
    """config.json + model.safetensors of a dequantised model. transformers' `save_pretrained` refuses a model
    loaded from GGUF (it keeps the file's quantisation note), though its weights are plain tensors by now."""
    from safetensors.torch import save_file

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the same storage as the embedding; safetensors stores it once
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
