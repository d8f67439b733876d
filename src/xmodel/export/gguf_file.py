"""An Xmodel checkpoint as one GGUF file for llama.cpp, written with the `gguf` package (llama.cpp's own writer).

The model goes through the μP fold of `xmodel.export.llama` first, so the file is a plain ``llama``
architecture — no custom llama.cpp code, unlike MiniCPM's own GGUF architecture. Tensor names come from
`gguf`'s tensor-name map; Q and K projections are permuted from Hugging Face's rotate-half RoPE layout to
llama.cpp's interleaved one (as llama.cpp's convert_hf_to_gguf.py does for Llama). Norm gains stay float32;
2-D weights take the requested type (a quantised row that does not fit the block size falls back to f16).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import XmodelError
from .gguf_vocab import vocab_for_gguf
from .llama import load_xmodel, read_xmodel_config, to_llama

FILE_TYPES = {  # --type → (tensor type of 2-D weights, general.file_type)
    "f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}


def permute_for_rope(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of each head from [first halves; second halves] (rotate-half) to interleaved pairs (llama.cpp)."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def gguf_tensors(llama) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) of every weight of a `LlamaForCausalLM`, RoPE rows permuted."""
    import gguf

    cfg = llama.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    out = []
    for name, tensor in llama.state_dict().items():
        if "rotary_emb" in name or (cfg.tie_word_embeddings and name == "lm_head.weight"):
            continue
        gguf_name = names.get_name(name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise XmodelError(f"no GGUF name for tensor {name}")
        t = tensor.detach().float()
        if name.endswith("q_proj.weight"):
            t = permute_for_rope(t, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            t = permute_for_rope(t, cfg.num_key_value_heads)
        out.append((gguf_name, t.numpy()))
    return out


def encode_tensor(array: np.ndarray, type_name: str):
    """(data, raw GGML type) of a float32 array in tensor type `type_name`; 1-D tensors stay F32."""
    import gguf

    qtype = gguf.GGMLQuantizationType[type_name]
    if array.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), gguf.GGMLQuantizationType.F16
    try:
        return gguf.quants.quantize(array, qtype), qtype
    except gguf.QuantError:  # row length not a multiple of the block size
        return array.astype(np.float16), gguf.GGMLQuantizationType.F16


def export_gguf(model_dir: str | Path, out_path: str | Path, type_name: str = "f16",
                tokenizer_dir: str | Path | None = None, name: str | None = None,
                overwrite: bool = False) -> tuple[Path, str]:
    """Write `model_dir` as a GGUF file; returns (path, a one-line summary). Written to a temp name, renamed;
    an existing file is refused unless `overwrite` (as the Llama export refuses a non-empty directory)."""
    import gguf
    from tqdm import tqdm

    if type_name not in FILE_TYPES:
        raise XmodelError(f"--type: {type_name!r} is not one of {', '.join(FILE_TYPES)}")
    model_dir, out_path = Path(model_dir), Path(out_path)
    if out_path.is_dir():
        raise XmodelError(f"{out_path}: is a directory (give the .gguf file to write)")
    if not out_path.parent.is_dir():
        raise XmodelError(f"{out_path.parent}: no such directory")
    if out_path.exists() and not overwrite:
        raise XmodelError(f"{out_path}: exists (pass --overwrite to replace it)")
    vocab = vocab_for_gguf(tokenizer_dir or model_dir, read_xmodel_config(model_dir).vocab_size)
    model = load_xmodel(model_dir)
    llama = to_llama(model)
    cfg = llama.config
    tensor_type, file_type = FILE_TYPES[type_name]

    tmp = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(tmp, arch="llama")
    try:
        writer.add_name(name or model_dir.resolve().name)
        writer.add_context_length(cfg.max_position_embeddings)
        writer.add_embedding_length(cfg.hidden_size)
        writer.add_block_count(cfg.num_hidden_layers)
        writer.add_feed_forward_length(cfg.intermediate_size)
        writer.add_head_count(cfg.num_attention_heads)
        writer.add_head_count_kv(cfg.num_key_value_heads)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
        writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(gguf.LlamaFileType[file_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab.write(writer)
        tensors = gguf_tensors(llama)
        for tensor_name, array in tqdm(tensors, desc=f"encoding {type_name}", unit="tensor", leave=False):
            data, raw_type = encode_tensor(array, tensor_type)
            writer.add_tensor(tensor_name, data, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    size_mib = out_path.stat().st_size / 2**20
    info = f"llama architecture, {len(tensors)} tensors, {type_name}, {size_mib:.1f} MiB, tokenizer {vocab.model}"
    for warning in vocab.warnings:
        info += f"\n  note: {warning}"
    return out_path, info
