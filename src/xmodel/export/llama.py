"""Fold Xmodel's μP multipliers into the weights of a plain `LlamaForCausalLM`.

The Xmodel forward pass (see `xmodel.model.modeling_xmodel`) differs from Llama's in three multipliers:

    h_0     = s_e · E[x]                                   (s_e = scale_emb)
    h_{l+1} = h_l + r · Attn_l(N_l(h_l))  (and the same for the MLP)   (r = scale_depth / √L)
    logits  = W_out · (N_f(h_L) / m)                       (m = hidden_size / dim_model_base)

with N(x) = g ⊙ x / √(mean(x²) + ε) the RMSNorm of gain g. A Llama model computes the same logits when its
residual stream is h' = h / s_e everywhere:

* **Embedding.** h'_0 = E[x], so the embedding matrix is kept as is (and a tied LM head stays tied).
* **Norms.** RMSNorm is invariant to the scale of its input except through ε:

      N(h / s_e; ε') = g ⊙ (h/s_e) / √(mean(h²)/s_e² + ε') = g ⊙ h / √(mean(h²) + s_e²·ε')

  which equals N(h; ε) exactly when **ε' = ε / s_e²**. Every norm (both per block, and the final one) reads
  the residual stream, so the exported config has `rms_norm_eps = rms_norm_eps / scale_emb²`.
* **Residual branches.** A block adds r · o_proj(·) to h, i.e. (r / s_e) · o_proj(·) to h'; its input is
  unchanged by the previous point. So o_proj and down_proj are multiplied by **r / s_e**.
* **Logits.** N_f(h_L)/m = (g_f/m) ⊙ …, so the final norm gain becomes **g_f / m** and the LM head is kept.

All three are exact in real arithmetic; in fp32 the exported logits agree to rounding (tested to ≤ 1e-4).
Greedy generations are identical. The result loads with `AutoModelForCausalLM` without any custom code.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ..errors import XmodelError
from ..model.configuration_xmodel import XmodelConfig
from ..model.loading import load_model_dir, read_model_config, require_xmodel_checkpoint, save_model
from ..model.convert import EXPORT_NOTE
from ..model.mup import fold_state_dict

# Files a tokenizer directory may hold: copied beside an exported checkpoint.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "added_tokens.json")


def llama_config_for(cfg: XmodelConfig) -> LlamaConfig:
    """The LlamaConfig whose model equals `cfg`'s once the weights are folded (ε scaled by 1/scale_emb²)."""
    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, hidden_act="silu",
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps / cfg.scale_emb ** 2,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False, mlp_bias=False, tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        initializer_range=cfg.initializer_range, use_cache=True)


def to_llama(model, dtype: torch.dtype | None = None) -> LlamaForCausalLM:
    """A `LlamaForCausalLM` computing the same logits as the Xmodel `model` (weights copied, not shared)."""
    cfg = model.config
    llama_cfg = llama_config_for(cfg)
    state = fold_state_dict(model.state_dict(), cfg)
    with torch.device("meta"):
        llama = LlamaForCausalLM(llama_cfg)
    missing, unexpected = llama.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise XmodelError(f"weights do not map onto Llama: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if cfg.tie_word_embeddings:
        llama.tie_weights()
    # Buffers that are not in the state dict (RoPE inverse frequencies) are rebuilt on the CPU.
    llama.model.rotary_emb = type(llama.model.rotary_emb)(llama_cfg)
    if dtype is not None:
        llama = llama.to(dtype)
    return llama.eval()


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def export_llama(model_dir: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None,
                 tokenizer_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write `model_dir` (an Xmodel checkpoint) as a plain Llama checkpoint in `out_dir`, tokenizer included.

    `dtype` None keeps the checkpoint's own precision. Written to a temporary sibling directory and renamed at
    the end, so a failure leaves nothing half-written; an existing non-empty `out_dir` is refused unless
    `overwrite` (then replaced once the new one is complete). `xmodel_export.json` records the folded μP values,
    which `xmodel import` uses to restore them.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise XmodelError(f"{out_dir}: exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise XmodelError(f"{out_dir}: exists and is not empty (pass --overwrite to replace it)")
    model = load_xmodel(model_dir)
    llama = to_llama(model, dtype or checkpoint_dtype(model_dir))
    cfg = model.config
    note = {"exported_from": str(model_dir),
            "mup_config": {"scale_emb": cfg.scale_emb, "scale_depth": cfg.scale_depth,
                           "dim_model_base": cfg.dim_model_base},
            "folded": {"o_proj_and_down_proj_times": cfg.residual_scale / cfg.scale_emb,
                       "final_norm_times": 1 / cfg.width_mult,
                       "rms_norm_eps": [cfg.rms_norm_eps, llama.config.rms_norm_eps]}}
    with staged_dir(out_dir, replace=overwrite) as tmp:
        save_model(llama, tmp)
        copy_tokenizer_files(Path(tokenizer_dir) if tokenizer_dir else model_dir, tmp)
        (tmp / EXPORT_NOTE).write_text(json.dumps(note, indent=2) + "\n")
    return out_dir


@contextlib.contextmanager
def staged_dir(out_dir: Path, replace: bool = False):
    """Yield a temporary sibling of `out_dir`, renamed to `out_dir` on success and removed on failure.

    An existing `out_dir` must be empty, unless `replace`: then it is removed only once the new one is complete.
    """
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out_dir.exists():
            if replace:
                shutil.rmtree(out_dir)
            else:
                out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_dtype(model_dir: Path) -> torch.dtype:
    """The precision a checkpoint was saved in (config.json's dtype), float32 if it does not say."""
    raw = read_model_config(model_dir)
    name = raw.get("dtype") or raw.get("torch_dtype") or "float32"
    return getattr(torch, str(name).replace("torch.", ""), torch.float32)


def read_xmodel_config(model_dir: Path) -> XmodelConfig:
    """The config of an Xmodel checkpoint directory, with a one-line error if it is something else."""
    require_xmodel_checkpoint(model_dir)
    return XmodelConfig.from_pretrained(model_dir)


def load_xmodel(model_dir: Path):
    """Load an Xmodel checkpoint directory in float32 (one-line error if it is not one)."""
    return load_model_dir(model_dir, "cpu", torch.float32, foreign="refuse")
