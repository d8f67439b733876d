"""Loading a model directory for inference: the model, its tokenizer, end-of-turn tokens and the chat prompt.

`require_model_dir` is the one check that a path is a model directory; the CLI and the evaluations use it too.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import XmodelError
from ..model.presets import PRESETS
from ..model.loading import load_model_and_tokenizer
from .engine import Generator

# Special tokens that end an assistant turn in common chat templates; a tokenizer's own EOS always does.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def require_model_dir(path: str | Path) -> Path:
    """`path` as a Path when it is a model directory (holds config.json); a one-line error otherwise."""
    p = Path(path)
    if not p.exists():
        raise XmodelError(f"{path}: no such model directory (or preset: {', '.join(PRESETS)})")
    if not (p / "config.json").is_file():
        raise XmodelError(f"{path}: not a model directory (no config.json)")
    return p


def stop_token_ids(model, tokenizer, model_dir: Path | None = None) -> set[int]:
    """EOS ids of the tokenizer, the model config and generation_config.json, plus known end-of-turn tokens."""
    ids = set()
    candidates = [tokenizer.eos_token_id, model.config.eos_token_id]
    if model_dir is not None and (Path(model_dir) / "generation_config.json").is_file():
        candidates.append(json.loads((Path(model_dir) / "generation_config.json").read_text()).get("eos_token_id"))
    for value in candidates:
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids


def load_generator(model_dir: str | Path, tokenizer_dir: str | Path | None = None, dtype: str = "auto",
                   device: str = "cpu", max_batch_size: int = 64, quantize: str = "none",
                   compile: bool = False) -> Generator:
    """A `Generator` for a model directory; `quantize="int8"` stores the linear weights as int8
    (`xmodel.inference.quantize`: faster decoding on CPU, not bit-exact); `compile` decodes through
    `torch.compile` (`engine.CompiledDecodeStep`)."""
    from ..export.importing import as_xmodel
    from .quantize import apply_quantization

    path = require_model_dir(model_dir)
    # The engine decodes with our model class: a Llama / MiniCPM folder is converted in memory.
    model, tokenizer = load_model_and_tokenizer(path, tokenizer_dir, device, dtype, foreign=as_xmodel())
    model = apply_quantization(model, quantize)
    return Generator(model, tokenizer, stop_token_ids(model, tokenizer, path), max_batch_size=max_batch_size,
                     compile=compile)


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` rendered by the tokenizer's chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise XmodelError("the tokenizer has no chat template (tokenizer_config.json / chat_template.jinja)")
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as e:  # a Jinja template error or a template that rejects the roles given
        raise XmodelError(f"chat template: {str(e).splitlines()[0]}") from None
    # The template writes any BOS itself; tokenizing must not add another.
    return tokenizer(text, add_special_tokens=False)["input_ids"]
