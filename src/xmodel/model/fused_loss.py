"""Cross-entropy of a linear head computed in chunks, never holding all B·T·V logits.

For a 65K vocabulary the logits of a small model's batch are gigabytes in fp32, and the standard path writes
them, reads them for log-softmax, writes the log-probabilities, and reads both again in backward. Here each
chunk of tokens goes through head → softmax → (softmax − one-hot) once, and the gradients with respect to the
hidden states and the head weight are formed right away (the method of Liger-Kernel's fused linear
cross-entropy, written for PyTorch ops). Backward then only scales the stored gradients by the incoming
gradient. Same matmul FLOPs as the standard path, a fraction of its memory traffic and peak memory.

Two choices measured on CPU (docs/PERFORMANCE.md, "Training step"):

* In bf16 the logits are ``h @ w_t`` and the hidden-state gradient ``(w_t @ d_logits.T).T`` with ``w_t`` the
  (d, V) transpose of the head weight: oneDNN runs the latter 1.5× faster than the ``d_logits @ w`` of a plain
  ``nn.Linear`` at these shapes (K = 65,280). Under ``torch.compile`` ``w_t`` is also made contiguous, which
  inductor folds into the autocast cast and which makes the logits GEMM ≈ 1.2× faster; eagerly that
  transposed copy would cost more than it saves. In fp32 (MKL's GEMMs; AVX2 CPUs train in fp32) the plain
  ``h @ w.T`` and ``d_logits @ w`` are as fast or faster, and the copy would cost ≈ 0.1 s a step for `tiny`.
* Under ``torch.compile``, d_logits is one ``where`` over a column-index comparison, which inductor fuses with
  the exponential into a single pass writing the compute dtype; eagerly the same values are formed in place,
  so eager peak memory stays at one fp32 chunk of logits.
"""

from __future__ import annotations

import torch


def _softmax_minus_onehot(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                          out_dtype: torch.dtype) -> torch.Tensor:
    """d(loss)/d(logits) for one chunk: softmax − one-hot, zero on ignored rows, in `out_dtype`."""
    if torch.compiler.is_compiling():
        cols = torch.arange(logits.shape[1], device=logits.device, dtype=torch.int32)
        is_target = cols[None, :] == targets.to(torch.int32)[:, None]
        grad = torch.exp(logits - lse[:, None]) - is_target.to(logits.dtype)
        return torch.where(valid[:, None], grad, 0.0).to(out_dtype)
    # An ignored row subtracts +inf instead of its log-sum-exp, so exp gives its zeros in the same pass.
    probs = logits.sub_(torch.where(valid, lse, torch.inf)[:, None]).exp_()
    probs[torch.arange(len(targets), device=targets.device), targets.clamp(min=0)] -= valid.to(probs.dtype)
    return probs.to(out_dtype)


def _chunked_loss(hidden, weight, targets, ignore_index: int, chunk_size: int, grad_hidden: bool,
                  grad_weight: bool):
    """The summed loss over non-ignored targets, and — only where asked — its gradients with respect to the hidden
    states and the head weight, formed chunk by chunk (None where not asked).

    hidden: (N, d); weight: (V, d); targets: (N,). Without gradients a chunk costs its logits GEMM alone: no
    d_logits, no second GEMM, no fp32 (V, d) weight-gradient buffer.
    """
    n = hidden.shape[0]
    device = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    w_t = weight.to(compute_dtype).t()  # (d, V)
    # bf16: a contiguous transposed copy, folded into the cast under compile (eagerly it costs more than it
    # saves). fp32 has no cast to fold it into, and MKL's fp32 GEMMs run the plain layouts as fast or faster.
    transposed = compute_dtype != torch.float32
    if transposed and torch.compiler.is_compiling():
        w_t = w_t.contiguous()
    d_hidden = torch.empty_like(hidden) if grad_hidden else None
    d_weight = None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, n, chunk_size):
        h = hidden[start:start + chunk_size].to(compute_dtype)
        t = targets[start:start + chunk_size]
        valid = t != ignore_index
        logits = (h @ w_t).float()
        lse = torch.logsumexp(logits, dim=-1)
        target_logit = logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
        total += torch.where(valid, lse - target_logit, 0.0).sum()
        if not (grad_hidden or grad_weight):
            continue
        d_logits = _softmax_minus_onehot(logits, lse, t, valid, compute_dtype)
        if grad_hidden:
            grad = (w_t @ d_logits.t()).t() if transposed else d_logits @ weight
            d_hidden[start:start + chunk_size] = grad.to(hidden.dtype)
        if grad_weight:
            chunk_grad = d_logits.t() @ h
            d_weight = chunk_grad.float() if d_weight is None else d_weight.add_(chunk_grad)
    if d_weight is None and grad_weight:  # no tokens at all
        d_weight = torch.zeros_like(weight, dtype=torch.float32)
    return total, d_hidden, d_weight


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, chunk_size: int):
        # The gradients are formed here, with the loss; backward only scales them by the incoming gradient.
        total, grad_hidden, grad_weight = _chunked_loss(hidden, weight, targets, ignore_index, chunk_size,
                                                        hidden.requires_grad, weight.requires_grad)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None
        gw = grad_weight * grad_output if grad_weight is not None else None
        return gh, gw, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100, chunk_size: int = 2048) -> torch.Tensor:
    """Sum over tokens of cross_entropy(hidden @ weight.T, targets), chunk by chunk.

    hidden (…, d) and targets (…) are flattened; targets equal to `ignore_index` contribute nothing. Without
    autograd (``torch.no_grad()``, or no input that requires grad) only the loss is computed: a weight keeps
    ``requires_grad=True`` under no_grad, so the autograd Function would otherwise form its gradient for nothing.
    """
    d = hidden.shape[-1]
    hidden, targets = hidden.reshape(-1, d), targets.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_size)
    return _chunked_loss(hidden, weight, targets, ignore_index, chunk_size, grad_hidden=False, grad_weight=False)[0]
