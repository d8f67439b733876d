"""Causal attention for compiled CPU training: PyTorch's flash kernel forward, a recomputing backward in GEMMs.

PyTorch's CPU flash-attention backward runs at ≈ 65 GFLOP/s on the tiny preset's shapes and was the largest
single kernel of a compiled training step (≈ 17 % at 4 × 256 tokens). Written as ordinary tensor ops, the
backward — recompute the probabilities from the forward's log-sum-exp, then five batched GEMMs and one fused
elementwise pass — is what inductor compiles well: measured 2.2× faster than the flash backward at 256 tokens,
equal at ≈ 768 and slower beyond, because it holds a (heads × T × T) score matrix in fp32 (see
docs/PERFORMANCE.md). So the model uses it only under `torch.compile`, on CPU, for sequences up to
`MAX_SEQ_LEN`; the forward is the same flash kernel either way, so outputs are unchanged.
"""

from __future__ import annotations

import torch

MAX_SEQ_LEN = 384  # longer sequences keep the flash backward (equal speed measured at 512)


def use_recomputing_backward(q: torch.Tensor, seq_len: int) -> bool:
    """Whether `causal_attention` beats SDPA here: compiled CPU training on short sequences."""
    return (q.device.type == "cpu" and q.requires_grad and seq_len <= MAX_SEQ_LEN
            and torch.compiler.is_compiling())


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
        b, h, t, d = q.shape
        kv = k.shape[1]
        g = h // kv
        dtype = q.dtype
        # The g query heads that share a K/V head are stacked along the rows, so every product is one GEMM
        # per (batch, K/V head) and K/V are never repeated.
        qg = q.reshape(b, kv, g * t, d)
        dog = grad_out.to(dtype).reshape(b, kv, g * t, d)
        scores = (qg @ k.transpose(-1, -2)).float().view(b, kv, g, t, t) * ctx.scale
        causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        probs = torch.where(causal, torch.exp(scores - lse.view(b, kv, g, t, 1)), 0.0)
        grad_v = probs.to(dtype).view(b, kv, g * t, t).transpose(-1, -2) @ dog
        grad_probs = (dog @ v.transpose(-1, -2)).float().view(b, kv, g, t, t)
        row_dot = (grad_out.float() * out.float()).sum(-1).view(b, kv, g, t, 1)  # Σ_j P_ij dP_ij
        grad_scores = (probs * (grad_probs - row_dot) * ctx.scale).to(dtype).view(b, kv, g * t, t)
        grad_q = (grad_scores @ k).view(b, h, t, d)
        grad_k = grad_scores.transpose(-1, -2) @ qg
        return grad_q, grad_k, grad_v, None


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal softmax(q kᵀ · scale) v with grouped K/V heads; equal to SDPA(is_causal=True, enable_gqa=True)."""
    # Like SDPA: under autocast all three in the autocast dtype (RoPE leaves q and k in fp32), else promoted.
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
    else:
        dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return _CausalAttention.apply(q.to(dtype), k.to(dtype), v.to(dtype), scale)
