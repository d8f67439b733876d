"""Closed-form sizes of an Xmodel: parameters, FLOPs per token, training memory and KV-cache bytes.

All figures come from the config alone (no weights are built), so `xmodel info` is instant even for 1.2B.
"""

from __future__ import annotations

from dataclasses import dataclass

from .configuration_xmodel import XmodelConfig

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass
class ModelStats:
    params_total: int            # unique parameters (a tied head counted once)
    params_embedding: int        # input embedding, plus the untied LM head if any
    params_non_embedding: int    # everything else: blocks and final norm
    flops_per_token_forward: int  # at the given context length
    flops_per_token_train: int    # forward + backward ≈ 3 × forward
    kv_cache_bytes_per_token: int


def count_parameters(cfg: XmodelConfig) -> tuple[int, int]:
    """(total, embedding) parameter counts from the shapes."""
    d, hd = cfg.hidden_size, cfg.head_dim
    attn = d * cfg.num_attention_heads * hd * 2 + d * cfg.num_key_value_heads * hd * 2  # q, o + k, v
    mlp = 3 * d * cfg.intermediate_size
    per_layer = attn + mlp + 2 * d  # two RMSNorm gains
    embedding = cfg.vocab_size * d * (1 if cfg.tie_word_embeddings else 2)
    total = cfg.num_hidden_layers * per_layer + d + embedding  # + final norm
    return total, embedding


def model_stats(cfg: XmodelConfig, seq_len: int | None = None, kv_dtype: str = "bf16") -> ModelStats:
    """FLOPs count multiply-adds as 2; attention scores use the full (not causal-halved) T×T, as PaLM's MFU does."""
    seq_len = seq_len or cfg.max_position_embeddings
    total, embedding = count_parameters(cfg)
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    matmul_params = total - embedding - (2 * L + 1) * d + cfg.vocab_size * d  # every weight used in a matmul
    attention = 2 * 2 * L * seq_len * cfg.num_attention_heads * cfg.head_dim  # QKᵀ and AV
    forward = 2 * matmul_params + attention
    kv = 2 * L * cfg.num_key_value_heads * cfg.head_dim * DTYPE_BYTES[kv_dtype]
    return ModelStats(total, embedding, total - embedding, forward, 3 * forward, kv)


def training_memory_bytes(cfg: XmodelConfig, micro_batch: int, seq_len: int, dtype: str = "bf16",
                          activation_checkpointing: bool = False) -> dict[str, int]:
    """Rough peak memory of one training process without sharding.

    Weights, gradients and AdamW's two moments are fp32 (16 bytes a parameter, also under bf16 autocast).
    Activations follow Korthikanti et al. (2022) for a block with flash/SDPA attention (no T×T scores kept):
    ~34·B·T·d bytes per layer in 16-bit (×2 in fp32), or only the block inputs with checkpointing; plus the
    fp32 logits and their gradient, B·T·V·8 bytes, which dominate small models with large vocabularies.
    """
    total, _ = count_parameters(cfg)
    width = DTYPE_BYTES[dtype]
    tokens = micro_batch * seq_len
    per_layer = tokens * cfg.hidden_size * (width if activation_checkpointing else 17 * width)
    activations = cfg.num_hidden_layers * per_layer
    logits = tokens * cfg.vocab_size * 8
    states = total * 16
    return {"weights_grads_adam": states, "activations": activations, "logits": logits,
            "total": states + activations + logits}
