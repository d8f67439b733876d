"""Without autograd the chunked loss computes the loss alone: no gradient GEMMs, no fp32 (V, d) buffer."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from xmodel import XmodelForCausalLM
from xmodel.model import fused_loss
from xmodel.model.fused_loss import linear_cross_entropy

from ..conftest import small_config
from .call_count import counting

V, D, N, CHUNK = 50, 16, 37, 8


class RecordOps(TorchDispatchMode):
    """Each aten op that runs, with the shapes and dtypes of the tensors it returns (new ones: views are left out)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        results = out if isinstance(out, (tuple, list)) else (out,)
        self.ops.append((func.overloadpacket.__name__,
                         [(tuple(t.shape), t.dtype) for t in results if isinstance(t, torch.Tensor)]))
        return out

    def made(self, shape, dtype) -> bool:
        return any((tuple(shape), dtype) in results for _, results in self.ops)

    def count(self, name: str) -> int:
        return sum(op == name for op, _ in self.ops)


def inputs():
    torch.manual_seed(0)
    targets = torch.randint(0, V, (N,))
    targets[[0, 9, 36]] = -100
    return torch.randn(N, D, requires_grad=True), torch.randn(V, D, requires_grad=True), targets


@pytest.mark.parametrize("no_autograd", ["no_grad", "inputs_without_grad"])
def test_no_gradient_work_without_autograd(no_autograd, monkeypatch):
    hidden, weight, targets = inputs()
    with_grad = linear_cross_entropy(hidden, weight, targets, chunk_size=CHUNK)
    with RecordOps() as training:
        linear_cross_entropy(hidden, weight, targets, chunk_size=CHUNK)
    chunks = -(-N // CHUNK)
    assert training.made((V, D), torch.float32) and training.count("mm") == 3 * chunks  # what is saved below

    counted, calls = counting(fused_loss._LinearCrossEntropy.forward)
    monkeypatch.setattr(fused_loss._LinearCrossEntropy, "forward", staticmethod(counted))
    if no_autograd == "inputs_without_grad":
        hidden, weight = hidden.detach(), weight.detach()
    with RecordOps() as ops, torch.set_grad_enabled(no_autograd != "no_grad"):
        loss = linear_cross_entropy(hidden, weight, targets, chunk_size=CHUNK)
    assert loss.grad_fn is None and not loss.requires_grad
    assert not calls  # the autograd Function is not entered
    assert not ops.made((V, D), torch.float32)  # no weight-gradient buffer
    assert ops.count("mm") == chunks  # one GEMM per chunk: the logits
    assert torch.equal(loss, with_grad.detach())


def test_model_loss_without_logits_under_no_grad():
    """The trainer's evaluate_loss path: model(..., return_logits=False) under no_grad."""
    torch.manual_seed(1)
    config = small_config(dim_model_base=16, scale_emb=3.0)
    model = XmodelForCausalLM(config).eval()
    ids = torch.randint(3, 211, (2, 21))
    labels = ids.clone()
    labels[0, :4] = -100
    with_grad = model(ids, labels=labels, return_logits=False).loss
    with torch.no_grad(), RecordOps() as ops:
        loss = model(ids, labels=labels, return_logits=False).loss
    assert loss.grad_fn is None
    assert not ops.made((config.vocab_size, config.hidden_size), torch.float32)
    assert torch.equal(loss, with_grad.detach())
