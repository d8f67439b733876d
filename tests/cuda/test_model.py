"""The model on CUDA: forward and backward against `LlamaForCausalLM` in fp32 and bf16, the μP model against its
own CPU run, the chunked loss against the standard one (eager and compiled), and every attention
implementation of transformers' registry against "eager".

Tolerances are relative errors ‖got − ref‖ / ‖ref‖: fp32 1e-5 for the same kernels on the same device (Xmodel and
Llama run the same operations), 1e-4 across devices or kernels; bf16 2e-2 (bf16 operands land between 1e-3 and
1e-2; gradients through a few layers a little more).
"""

import copy

import pytest
import torch

from xmodel import XmodelForCausalLM
from xmodel.model.fused_loss import linear_cross_entropy

from ..conftest import small_config
from ..test_model_parity import llama_twin
from .common import DEVICE, MARKS, ON_CUDA, assert_close

pytestmark = MARKS

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def shape(**overrides):
    """A model a little wider than the CPU tests' (head_dim 32, grouped K/V) so the GPU kernels see real tiles."""
    return small_config(**{"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3,
                           "num_attention_heads": 4, "num_key_value_heads": 2, **overrides})


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_forward_and_backward_match_llama(dtype):
    torch.manual_seed(0)
    for tied in (True, False):
        model = XmodelForCausalLM(shape(tie_word_embeddings=tied, rope_theta=50000.0))
        llama = llama_twin(model)
        model, llama = model.to(DEVICE, dtype).train(), llama.to(DEVICE, dtype).train()
        ids = torch.randint(3, 500, (2, 96), device=DEVICE)
        ours, ref = model(ids, labels=ids), llama(ids, labels=ids)
        assert_close(ours.logits, ref.logits, TOL[dtype], f"logits tied={tied}")
        assert abs(ours.loss.item() - ref.loss.item()) <= TOL[dtype] * abs(ref.loss.item())
        ours.loss.backward()
        ref.loss.backward()
        ref_grads = grads(llama)
        got = grads(model)
        assert got.keys() == ref_grads.keys()
        for name, g in got.items():
            assert_close(g, ref_grads[name], 10 * TOL[dtype], f"grad {name} tied={tied}")


def test_bf16_is_close_to_fp32():
    """The bf16 model's logits and gradients against the same weights in fp32 (the rounding of bf16 itself)."""
    torch.manual_seed(1)
    ref_model = XmodelForCausalLM(shape(scale_emb=4.0, scale_depth=1.4, dim_model_base=32, initializer_range=0.1))
    ref_model = ref_model.to(DEVICE).train()
    bf16 = copy.deepcopy(ref_model).to(torch.bfloat16)
    ids = torch.randint(3, 500, (2, 96), device=DEVICE)
    ref, got = ref_model(ids, labels=ids), bf16(ids, labels=ids)
    assert_close(got.logits, ref.logits, 3e-2, "logits")
    ref.loss.backward()
    got.loss.backward()
    ref_grads = grads(ref_model)
    for name, g in grads(bf16).items():
        assert_close(g, ref_grads[name], 1e-1, f"grad {name}")


def test_mup_model_matches_its_cpu_run():
    """The five μP operations on the device give what they give on the CPU (fp32, with a padding mask)."""
    torch.manual_seed(2)
    cpu = XmodelForCausalLM(shape(scale_emb=12.0, scale_depth=1.4, dim_model_base=32, initializer_range=0.1)).train()
    dev = copy.deepcopy(cpu).to(DEVICE)
    ids = torch.randint(3, 500, (3, 80))
    mask = torch.ones_like(ids)
    mask[1, :9] = 0
    ref = cpu(ids, attention_mask=mask, labels=ids)
    got = dev(ids.to(DEVICE), attention_mask=mask.to(DEVICE), labels=ids.to(DEVICE))
    keep = mask.bool()
    assert_close(got.logits.cpu()[keep], ref.logits[keep], 1e-4, "logits")
    ref.loss.backward()
    got.loss.backward()
    ref_grads = grads(cpu)
    for name, g in grads(dev).items():
        assert_close(g, ref_grads[name], 1e-4, f"grad {name}")


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_chunked_loss_matches_standard_loss(autocast):
    """The trainer's chunked loss (`return_logits=False`) against the standard loss over full logits: the loss and
    every gradient, with ignored labels, tied and untied heads, in fp32 and under bf16 autocast."""
    torch.manual_seed(3)
    device_type = torch.device(DEVICE).type
    for tied in (True, False):
        model = XmodelForCausalLM(shape(tie_word_embeddings=tied, dim_model_base=32, scale_emb=3.0)).to(DEVICE)
        ids = torch.randint(3, 500, (2, 80), device=DEVICE)
        labels = ids.clone()
        labels[0, :7] = -100
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            ref = model(ids, labels=labels)
        ref.loss.backward()
        ref_grads = grads(model)
        model.zero_grad()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            fused = model(ids, labels=labels, return_logits=False)
        assert fused.logits is None
        fused.loss.backward()
        tol = 2e-2 if autocast else 1e-5
        assert abs(fused.loss.item() - ref.loss.item()) <= tol * abs(ref.loss.item())
        for name, g in grads(model).items():
            assert_close(g, ref_grads[name], 5 * tol, f"grad {name} tied={tied}")


def test_compiled_chunked_loss_matches_cross_entropy():
    """`linear_cross_entropy` through torch.compile (its compiled form builds d_logits differently) against
    cross-entropy over full logits, several chunks with a partial last one, in fp32 and under bf16 autocast."""
    torch.manual_seed(4)
    device_type = torch.device(DEVICE).type
    hidden = torch.randn(300, 64, device=DEVICE)
    weight = torch.randn(1000, 64, device=DEVICE) * 0.2
    targets = torch.randint(0, 1000, (300,), device=DEVICE)
    targets[[0, 77, 299]] = -100
    fn = torch.compile(linear_cross_entropy)
    for autocast in (False, True):
        h_ref, w_ref = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            logits = (h_ref @ w_ref.t()).float()
            ref = torch.nn.functional.cross_entropy(logits, targets, reduction="sum", ignore_index=-100)
            got = fn(h, w, targets, chunk_size=128)
        ref.backward()
        got.backward()
        tol = 2e-2 if autocast else 1e-5
        assert abs(got.item() - ref.item()) <= tol * abs(ref.item()), autocast
        assert_close(h.grad, h_ref.grad, 5 * tol, f"hidden grad autocast={autocast}")
        assert_close(w.grad, w_ref.grad, 5 * tol, f"weight grad autocast={autocast}")
        assert h.grad[[0, 77, 299]].abs().max() == 0


def flash_attention_2_available() -> bool:
    try:
        from transformers.utils import is_flash_attn_2_available
    except ImportError:
        return False
    return bool(is_flash_attn_2_available())


@pytest.mark.parametrize("impl", ["sdpa", "eager", "flex_attention", "flash_attention_2"])
def test_attention_implementations_match_eager(impl):
    """Each attention implementation the model takes through transformers' registry (`attn_implementation=`)
    gives the eager implementation's logits, with and without left padding, and its gradients.

    Tolerances (relative): fp32 1e-4, FlexAttention 3e-3, bf16 2e-2. flash_attention_2 needs the flash-attn package and fp16/bf16 (compared in bf16); FlexAttention has no
    backward on the CPU (the dry run checks its forward only)."""
    if impl == "flash_attention_2" and not (ON_CUDA and flash_attention_2_available()):
        pytest.skip("flash_attention_2: flash-attn is not installed here (or no CUDA)")
    dtype = torch.bfloat16 if impl == "flash_attention_2" else torch.float32
    # FlexAttention's Triton kernel may take fp32 dot products in TF32 (about 3e-4 relative); a masking error
    # would be off by order one.
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3 if impl == "flex_attention" else 1e-4
    backward = not (impl == "flex_attention" and not ON_CUDA)
    torch.manual_seed(5)
    ref_model = XmodelForCausalLM(shape(scale_emb=4.0, dim_model_base=32)).to(DEVICE, dtype).train()
    ref_model.set_attn_implementation("eager")
    model = copy.deepcopy(ref_model)
    model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl
    ids = torch.randint(3, 500, (3, 72), device=DEVICE)
    mask = torch.ones_like(ids)
    mask[1, :11] = 0   # left padding, as the engine batches prompts
    mask[2, :3] = 0
    keep = mask.bool()
    with torch.set_grad_enabled(backward):
        got, ref = model(ids, labels=ids), ref_model(ids, labels=ids)
        assert_close(got.logits, ref.logits, tol, f"{impl} logits")
        padded, padded_ref = model(ids, attention_mask=mask), ref_model(ids, attention_mask=mask)
        assert_close(padded.logits[keep], padded_ref.logits[keep], tol, f"{impl} logits with padding")
    if backward:
        got.loss.backward()
        ref.loss.backward()
        ref_grads = grads(ref_model)
        for name, g in grads(model).items():
            assert_close(g, ref_grads[name], 10 * tol, f"{impl} grad {name}")
