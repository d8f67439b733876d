"""Loading and saving a model folder: the one place a model directory is read into a model.

`load_model_dir` reads config.json first (`read_model_config`), verifies the weights against the checksums
Xmodel saved beside them (`save_model` writes ``xmodel_checksums.json``; a folder made elsewhere has none and is
not checked), reads every safetensors header (a damaged file is named), checks the tensor shapes against the
config before transformers loads them, and turns whatever else goes wrong into one `XmodelError` naming the
folder. transformers reports a shape mismatch in a log table and then raises a generic error; we raise first,
with the tensor's name, both shapes and the config fields that set them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Callable
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
CHECKSUM_FILE = "xmodel_checksums.json"  # {weight file: sha256}, written by `save_model`
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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


def is_xmodel_checkpoint(config: dict) -> bool:
    """A checkpoint of our own class. An `auto_map` points at the authors' remote code instead (the MiniCPM /
    Xmodel-2 releases), which `xmodel import` converts."""
    return config.get("model_type") == "xmodel" and "auto_map" not in config


def require_xmodel_checkpoint(model_dir: str | Path) -> dict:
    """The config of an Xmodel checkpoint folder; a one-line error for any other model."""
    config = read_model_config(model_dir)
    if not is_xmodel_checkpoint(config):
        raise XmodelError(f"{model_dir}: not an Xmodel checkpoint (model_type {config.get('model_type')!r}); "
                          "run 'xmodel import' first")
    return config


def weight_files(model_dir: Path) -> list[str]:
    """The files that hold a folder's weights, as names inside it: a shard index and its shards, or the single
    model.safetensors / pytorch_model.bin."""
    for index_name in SHARD_INDEXES:
        index = model_dir / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
                raise XmodelError(f"{index}: not a shard index ({type(e).__name__}: {e})") from None
            return [index_name, *shards]
    return [name for name in SINGLE_WEIGHT_FILES if (model_dir / name).is_file()]


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_checksums(model_dir: Path) -> None:
    """Record the sha256 of every weight file, so a later load can tell a damaged copy from a good one."""
    sums = {name: _sha256(model_dir / name) for name in weight_files(model_dir)}
    (model_dir / CHECKSUM_FILE).write_text(json.dumps(sums, indent=1) + "\n", encoding="utf-8")


def verify_checksums(model_dir: Path) -> None:
    """Compare the weight files with `CHECKSUM_FILE`; a folder without one (made elsewhere) passes."""
    path = model_dir / CHECKSUM_FILE
    if not path.is_file():
        return
    try:
        sums = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(sums, dict):
            raise ValueError("a JSON object of file names and sha256 digests is expected")
    except (ValueError, UnicodeDecodeError) as e:
        raise XmodelError(f"{path}: not a checksum file ({e})") from None
    for name, digest in sums.items():
        file = model_dir / name
        if not file.is_file():
            raise XmodelError(f"{file}: missing (listed in {CHECKSUM_FILE})")
        if _sha256(file) != digest:
            raise XmodelError(f"{file}: checksum mismatch with {CHECKSUM_FILE} (truncated or changed since it "
                              "was saved)")


def save_model(model, out_dir: str | Path, **save_kwargs) -> None:
    """`model.save_pretrained(out_dir)` plus the checksums of its weight files: how Xmodel saves every model
    folder."""
    model.save_pretrained(out_dir, **save_kwargs)
    write_checksums(Path(out_dir))


def checkpoint_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, read from the safetensors headers only (no weights are loaded); a file whose header
    cannot be read is named in a one-line error."""
    from safetensors import SafetensorError, safe_open

    shapes = {}
    for name in weight_files(model_dir):
        if not name.endswith(".safetensors"):
            continue
        path = model_dir / name
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError) as e:
            raise XmodelError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
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


def resolve_device(name: str | None) -> str:
    """`name` ("auto" or None: cuda when there is one) checked against this machine, so a missing GPU is one line
    rather than torch's AssertionError."""
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise XmodelError(f"--device {name}: not a device (cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise XmodelError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise XmodelError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise XmodelError(f"--device {name}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise XmodelError(f"--device {name}: not supported (cpu, cuda, cuda:N or mps)")
    return name


def torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from its name ("bfloat16"); None or "auto" keep the checkpoint's own precision."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return None
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise XmodelError(f"--dtype {dtype}: not a torch dtype (float32, bfloat16, float16, auto)")
    return value


# How a checkpoint of another architecture (Llama, MiniCPM) becomes a model: transformers' own class, a refusal,
# or a converter (model folder, dtype or None) → model, e.g. `xmodel.export.importing.convert_checkpoint`.
Foreign = str | Callable[[Path, "torch.dtype | None"], object]


def load_model_dir(model_dir: str | Path, device: str | None = "cpu", dtype: torch.dtype | str | None = None, *,
                   foreign: Foreign = "transformers"):
    """The model of a model folder, in eval mode on `device` (None: cuda when available), in `dtype` (None or
    "auto": the checkpoint's own, except a bf16/fp16 one on a CPU that multiplies them slower than fp32, which
    runs in fp32: `_fastest_on_this_cpu`). Every failure is one `XmodelError` naming the folder or the file.

    An Xmodel checkpoint loads as `XmodelForCausalLM`; any other is loaded by `foreign`: "transformers" (its
    own transformers class), "refuse" (a one-line error: the command needs an Xmodel), or a converter.
    """
    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    device = resolve_device(device)
    dtype = torch_dtype(dtype)
    if foreign == "refuse":
        require_xmodel_checkpoint(model_dir)
    verify_checksums(model_dir)
    checkpoint_shapes(model_dir)  # every safetensors header is read here, so a damaged file is named
    try:
        with _progress_bars_on_terminals_only():
            if is_xmodel_checkpoint(config) or foreign == "transformers":
                # `import xmodel` (run before this module) registered XmodelForCausalLM with the Auto classes.
                from transformers import AutoModelForCausalLM

                model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or "auto")
            else:
                model = foreign(model_dir, dtype)
        model = model.to(device).eval()
    except XmodelError:
        raise
    except Exception as e:  # noqa: BLE001 — whatever transformers, safetensors or torch raise: one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise XmodelError(f"{model_dir}: cannot load the model ({type(e).__name__}: {reason})") from e
    if dtype is None and torch.device(device).type == "cpu":
        model = _fastest_on_this_cpu(model, model_dir)
    return model


def _fastest_on_this_cpu(model, model_dir: Path):
    """A half-precision checkpoint loaded with no dtype asked for runs in fp32 where this CPU multiplies
    half-precision matrices slower (emulated bf16 on AVX2: 10–30×); said on stderr."""
    from .precision import cpu_weights_dtype

    hidden = getattr(model.config, "hidden_size", None)
    if hidden is None:
        return model
    weights = next(model.parameters()).dtype
    run_dtype, why = cpu_weights_dtype(weights, hidden, getattr(model.config, "intermediate_size", None) or 4 * hidden)
    if run_dtype != weights:
        print(f"{model_dir}: {why}", file=sys.stderr, flush=True)
        model = model.to(run_dtype)
    return model


@contextlib.contextmanager
def _progress_bars_on_terminals_only():
    """transformers' "Loading weights" bar only on a terminal: in a log or a pipe it is a line of noise (before a
    one-line error, a second line)."""
    from transformers.utils import logging as hf_logging

    quiet = hf_logging.is_progress_bar_enabled() and not sys.stderr.isatty()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


def load_model_and_tokenizer(model_dir: str | Path, tokenizer_dir: str | Path | None = None,
                             device: str | None = "cpu", dtype: torch.dtype | str | None = None, *,
                             foreign: Foreign = "transformers"):
    """(model, tokenizer) of a model folder (`load_model_dir`) with its tokenizer, or the one in
    `tokenizer_dir`; refuses a tokenizer whose ids the model cannot embed."""
    from ..tokenizer.loading import check_vocab_fits, load_pretrained_tokenizer

    # The model's config first: transformers' tokenizer loader reads config.json too, and would report a broken
    # one as "no tokenizer found".
    read_model_config(model_dir)
    tokenizer = load_pretrained_tokenizer(tokenizer_dir or model_dir)
    model = load_model_dir(model_dir, device, dtype, foreign=foreign)
    check_vocab_fits(len(tokenizer), model.config.vocab_size)
    return model, tokenizer
