"""Cross-entropy of a linear head computed in chunks, never holding all B·T·V logits.

For a 65K vocabulary the logits of a small model's batch are gigabytes in fp32, and the standard path writes
them, reads them for log-softmax, writes the log-probabilities, and reads both again in backward. Here each
chunk of tokens goes through head → softmax → (softmax − one-hot) once, and the gradients with respect to the
hidden states and the head weight are formed right away (the method of Liger-Kernel's fused linear
cross-entropy, written for PyTorch ops). Backward then only scales the stored gradients by the incoming
gradient. Same matmul FLOPs as the standard path, a fraction of its memory traffic and peak memory.
"""

from __future__ import annotations

import torch


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, chunk_size: int):
        # hidden: (N, d); weight: (V, d); targets: (N,). Returns the *summed* loss over non-ignored targets.
        n = hidden.shape[0]
        device = hidden.device.type
        compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        w = weight.to(compute_dtype)
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_size):
            h = hidden[start:start + chunk_size].to(compute_dtype)
            t = targets[start:start + chunk_size]
            valid = t != ignore_index
            logits = (h @ w.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            safe_t = t.clamp(min=0)
            target_logit = logits.gather(1, safe_t[:, None]).squeeze(1)
            total += ((lse - target_logit) * valid).sum()
            # d(loss)/d(logits) = softmax − one-hot, zero on ignored rows, in the logits buffer. An ignored row
            # subtracts +inf instead of its log-sum-exp, so exp gives its zeros in the same pass.
            probs = logits.sub_(torch.where(valid, lse, torch.inf)[:, None]).exp_()
            probs[torch.arange(len(t), device=t.device), safe_t] -= valid.to(probs.dtype)
            d_logits = probs.to(compute_dtype)
            if grad_hidden is not None:
                grad_hidden[start:start + chunk_size] = (d_logits @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (d_logits.t() @ h).float()
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

    hidden (…, d) and targets (…) are flattened; targets equal to `ignore_index` contribute nothing.
    """
    d = hidden.shape[-1]
    return _LinearCrossEntropy.apply(hidden.reshape(-1, d), weight, targets.reshape(-1), ignore_index, chunk_size)
