"""Causal attention for compiled CPU training: PyTorch's flash kernel forward, a recomputing backward in GEMMs.

PyTorch's CPU flash-attention backward runs at ≈ 65–110 GFLOP/s on the tiny preset's shapes and was the
largest single kernel of a compiled training step (17 % of it at 4 × 256 tokens, 28 % at 4 × 1,024). Written
as ordinary tensor ops — recompute the probabilities from the forward's log-sum-exp, then five batched GEMMs
and one fused elementwise pass per block of query rows — the backward is what inductor compiles well:
attention forward + backward measured 1.3–1.6× faster at 256–2,048 tokens (docs/PERFORMANCE.md). Blocks of
`BLOCK` query rows skip the keys causality hides and keep each block's probabilities (bf16) small enough to
be reused from the heap; a whole (T × T) fp32 matrix per head made it slower than flash beyond 512 tokens.
Eagerly the same ops are slower than the flash kernel, so the model uses this only under `torch.compile`,
on CPU, up to `MAX_SEQ_LEN` (the graph unrolls one block per 128 rows). The forward is the flash kernel
either way, so outputs are unchanged.

`cpu_attention_forward` is this module as an attention implementation of transformers' registry, under the
name `CPU_ATTENTION` ("xmodel_cpu"): SDPA with the grouped K/V heads read in place (no repeated copies) and
the recomputing backward where it pays. Xmodel runs it for "sdpa" on CPU (`modeling_xmodel.XmodelAttention`);
with its mask function registered too, any transformers model can select it by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

BLOCK = 128  # query rows per backward block: the fastest of 64, 128, 256, 512 at 1,024 and 2,048 tokens
MAX_SEQ_LEN = 2048  # longer sequences keep the flash backward (not measured beyond)


def use_recomputing_backward(q: torch.Tensor, seq_len: int) -> bool:
    """Whether `causal_attention` beats SDPA here: compiled CPU training on short sequences."""
    return (q.device.type == "cpu" and q.requires_grad and seq_len <= MAX_SEQ_LEN
            and torch.compiler.is_compiling())


def attention_backward(q, k, v, out, lse, grad_out, scale: float):
    """Gradients of causal attention with respect to q, k, v, from the forward's output and log-sum-exp.

    Query rows go in blocks of `BLOCK`; a block needs only the keys up to its last row (causality), and its
    (heads × block × keys) probabilities stay small enough to be reused from the heap and cache.
    """
    b, h, t, d = q.shape
    kv = k.shape[1]
    g = h // kv
    dtype = q.dtype
    # The g query heads that share a K/V head are stacked along the rows, so every product is one GEMM
    # per (batch, K/V head) and K/V are never repeated.
    # reshape, not view: q, the incoming gradient and the flash kernel's log-sum-exp may be strided (B, T, H, …).
    q5, do5 = q.reshape(b, kv, g, t, d), grad_out.to(dtype).reshape(b, kv, g, t, d)
    lse5 = lse.reshape(b, kv, g, t, 1)
    row_dot = (grad_out.float() * out.float()).sum(-1).view(b, kv, g, t, 1)  # Σ_j P_ij dP_ij
    grad_q, grad_k, grad_v = [], 0, 0
    for start in range(0, t, BLOCK):
        end = min(start + BLOCK, t)
        rows = end - start
        qb = q5[:, :, :, start:end].reshape(b, kv, g * rows, d)
        dob = do5[:, :, :, start:end].reshape(b, kv, g * rows, d)
        kb, vb = k[:, :, :end], v[:, :, :end]
        scores = (qb @ kb.transpose(-1, -2)).view(b, kv, g, rows, end).float() * scale
        visible = torch.ones(rows, end, dtype=torch.bool, device=q.device).tril(start)
        probs = torch.where(visible, torch.exp(scores - lse5[:, :, :, start:end]), 0.0).to(dtype)
        grad_probs = (dob @ vb.transpose(-1, -2)).view(b, kv, g, rows, end)
        grad_scores = (probs.float() * (grad_probs.float() - row_dot[:, :, :, start:end]) * scale).to(dtype)
        grad_scores = grad_scores.view(b, kv, g * rows, end)
        grad_q.append((grad_scores @ kb).view(b, kv, g, rows, d))
        pad = (0, 0, 0, t - end)  # this block's keys are the first `end`
        grad_k = grad_k + F.pad((grad_scores.transpose(-1, -2) @ qb).float(), pad)
        grad_v = grad_v + F.pad((probs.view(b, kv, g * rows, end).transpose(-1, -2) @ dob).float(), pad)
    return torch.cat(grad_q, dim=3).view(b, h, t, d), grad_k.to(dtype), grad_v.to(dtype)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale: float):
        # q: (B, H, T, D); k, v: (B, KV, T, D) with H a multiple of KV (grouped-query attention).
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, is_causal=True,
                                                                            scale=scale)[:2]
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        return *attention_backward(q, k, v, out, lse, grad_out, ctx.scale), None


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal softmax(q kᵀ · scale) v with grouped K/V heads; equal to SDPA(is_causal=True, enable_gqa=True)."""
    # Like SDPA: under autocast all three in the autocast dtype (RoPE leaves q and k in fp32), else promoted.
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
    else:
        dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return _CausalAttention.apply(q.to(dtype), k.to(dtype), v.to(dtype), scale)


def cpu_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                          **kwargs) -> tuple[torch.Tensor, None]:
    """SDPA as transformers' attention interface calls it: (B, H, T, D) inputs, (B, T, H, D) output.

    No mask means causal over the new tokens (SDPA's is_causal), or no mask at all for one token after a cache.
    Grouped K/V heads go to SDPA as they are (``enable_gqa``), and in compiled CPU training causal attention
    without a cache (as many keys as queries) takes the recomputing backward; the forward is the same kernel.
    """
    q_len = query.shape[2]
    is_causal = attention_mask is None and q_len > 1
    if is_causal and key.shape[2] == q_len and dropout == 0.0 and use_recomputing_backward(query, q_len):
        out = causal_attention(query, key, value, scale=scaling)
    else:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                             is_causal=is_causal, scale=scaling,
                                             enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2), None


CPU_ATTENTION = "xmodel_cpu"
AttentionInterface.register(CPU_ATTENTION, cpu_attention_forward)
AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)  # the masks SDPA takes (boolean, or None for causal)
