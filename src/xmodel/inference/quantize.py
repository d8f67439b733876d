"""Int8 weight-only quantization for decoding (gpt-fast's recipe, on PyTorch's own int8 kernel).

At batch 1 a decode step reads every weight once, so its time is the size of the weights over memory
bandwidth; on CPU, PyTorch's bf16 matrix-vector product is no faster than fp32's. Storing each linear layer's
weight as int8 with one scale per output row (symmetric absmax) reads a quarter of fp32's bytes, and
`torch.ops.aten._weight_int8pack_mm` multiplies bf16 activations by it without dequantising the matrix.
The rest of the model runs in bf16; the embedding stays a bf16 lookup table, and a tied LM head gets its own
int8 copy. Not exact: every weight is rounded to 8 bits, so logits move slightly (tests/test_quantize.py
bounds how much); greedy text can differ from the unquantized model's after a near-tie.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import XmodelError

QUANTIZATIONS = ("none", "int8")


class Int8Linear(nn.Module):
    """A bias-free `nn.Linear` replacement holding an int8 weight and bf16 per-row scales."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise XmodelError("int8 quantization: linear layers with a bias are not supported")
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scale)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight, bf16 scales"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Convert `model` in place to bf16 with every `nn.Linear` an `Int8Linear`; returns it (in eval mode).

    For inference only: the int8 weights have no gradients and the model can no longer be trained or saved as
    an Xmodel checkpoint."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not targets:
        raise XmodelError("int8 quantization: the model has no linear layers")
    for name, linear in targets:  # from the weights as they are (fp32 usually), before the cast to bf16
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(linear).to(linear.weight.device))
    return model.to(torch.bfloat16).eval()  # casts floating-point tensors only: the int8 weights stay int8


def apply_quantization(model: nn.Module, quantize: str) -> nn.Module:
    """`model` as `quantize` ('none' or 'int8') asks."""
    if quantize not in QUANTIZATIONS:
        raise XmodelError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    return quantize_int8(model) if quantize == "int8" else model
