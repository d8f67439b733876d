"""With neutral μP settings an Xmodel is exactly a Llama model."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from xmodel import XmodelForCausalLM

from .conftest import small_config


def llama_twin(model: XmodelForCausalLM) -> LlamaForCausalLM:
    c = model.config
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps,
        tie_word_embeddings=c.tie_word_embeddings, max_position_embeddings=c.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta}))
    missing, unexpected = llama.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    return llama.eval()


def test_same_logits_and_loss_as_llama():
    torch.manual_seed(0)
    for tied in (True, False):
        model = XmodelForCausalLM(small_config(tie_word_embeddings=tied, rope_theta=50000.0)).eval()
        llama = llama_twin(model)
        ids = torch.randint(3, 211, (3, 40))
        with torch.no_grad():
            ours, ref = model(ids, labels=ids), llama(ids, labels=ids)
        assert (ours.logits - ref.logits).abs().max() <= 1e-5
        assert abs(ours.loss.item() - ref.loss.item()) <= 1e-5


def test_same_logits_with_padding_mask():
    torch.manual_seed(1)
    model = XmodelForCausalLM(small_config()).eval()
    llama = llama_twin(model)
    ids = torch.randint(3, 211, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0   # left padding
    mask[2, -7:] = 0  # right padding
    with torch.no_grad():
        ours, ref = model(ids, attention_mask=mask), llama(ids, attention_mask=mask)
    keep = mask.bool()
    assert torch.isfinite(ours.logits).all()
    assert (ours.logits[keep] - ref.logits[keep]).abs().max() <= 1e-5
    # A fully unpadded mask gives the same logits as no mask.
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, model(ids, attention_mask=torch.ones_like(ids)).logits, atol=1e-6)


def test_ignore_index_and_items_in_batch():
    torch.manual_seed(2)
    model = XmodelForCausalLM(small_config()).eval()
    ids = torch.randint(3, 211, (2, 16))
    labels = ids.clone()
    labels[:, :6] = -100
    with torch.no_grad():
        mean = model(ids, labels=labels).loss
        n = (labels[:, 1:] != -100).sum()
        summed = model(ids, labels=labels, num_items_in_batch=n).loss
    assert torch.allclose(mean, summed, atol=1e-6)


def test_chunked_loss_matches_standard_loss_and_gradients():
    torch.manual_seed(3)
    for tied in (True, False):
        model = XmodelForCausalLM(small_config(tie_word_embeddings=tied, dim_model_base=16, scale_emb=3.0))
        ids = torch.randint(3, 211, (2, 21))
        labels = ids.clone()
        labels[0, :4] = -100
        ref = model(ids, labels=labels)
        ref.loss.backward()
        ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        fused = model(ids, labels=labels, return_logits=False)
        assert fused.logits is None
        fused.loss.backward()
        assert abs(fused.loss.item() - ref.loss.item()) < 1e-5
        for n, p in model.named_parameters():
            assert torch.allclose(p.grad, ref_grads[n], atol=1e-6, rtol=1e-4), n


@pytest.mark.parametrize("compiled", [False, True])
def test_linear_cross_entropy_in_chunks_matches_cross_entropy(compiled):
    """Several chunks (the last one partial), ignored targets, fp32 and bf16 autocast, eager and compiled (the
    compiled path forms d_logits differently; see xmodel.model.fused_loss)."""
    from xmodel.model.fused_loss import linear_cross_entropy
    torch.manual_seed(4)
    hidden = torch.randn(37, 16)
    weight = torch.randn(50, 16) * 0.5
    targets = torch.randint(0, 50, (37,))
    targets[[0, 9, 36]] = -100
    fn = torch.compile(linear_cross_entropy) if compiled else linear_cross_entropy
    for autocast in (False, True):
        h_ref, w_ref = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = (h_ref @ w_ref.t()).float()
            ref = torch.nn.functional.cross_entropy(logits, targets, reduction="sum", ignore_index=-100)
            got = fn(h, w, targets, chunk_size=8)
        (ref * 0.5).backward()
        (got * 0.5).backward()
        tol = dict(atol=2e-2, rtol=2e-2) if autocast else dict(atol=1e-5, rtol=1e-5)
        assert torch.allclose(got, ref, **tol), (autocast, got, ref)
        assert torch.allclose(h.grad, h_ref.grad, **tol), autocast
        assert torch.allclose(w.grad, w_ref.grad, **tol), autocast
        assert h.grad[[0, 9, 36]].abs().max() == 0  # an ignored target sends no gradient to its position


@pytest.mark.parametrize("compiled", [False, True])
def test_cpu_causal_attention_matches_sdpa(compiled, monkeypatch):
    """The recomputing backward (xmodel.model.cpu_attention) gives SDPA's outputs and gradients: grouped and
    ungrouped heads, query blocks of 16 rows over 37 positions (the last block partial), fp32 and bf16 autocast
    (RoPE's fp32 q and k mixed with a bf16 v, as in the model)."""
    from xmodel.model import cpu_attention
    from xmodel.model.cpu_attention import causal_attention
    monkeypatch.setattr(cpu_attention, "BLOCK", 16)
    fn = torch.compile(causal_attention, dynamic=False) if compiled else causal_attention
    torch.manual_seed(5)
    # A cold compile costs ≈ 20 s per case, so the compiled run checks the model's case only: grouped heads under
    # bf16 autocast (compiled fp32 is covered by test_train_loop's test_compiled_training_matches_eager).
    for heads, kv_heads in ((4, 2),) if compiled else ((4, 2), (3, 3)):
        q, k, v = torch.randn(2, heads, 37, 16), torch.randn(2, kv_heads, 37, 16), torch.randn(2, kv_heads, 37, 16)
        grad_out = torch.randn(2, heads, 37, 16)
        for autocast in (True,) if compiled else (False, True):
            ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
            got_in = [t.clone().requires_grad_() for t in (q, k, v)]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                ref = torch.nn.functional.scaled_dot_product_attention(
                    *ref_in[:2], ref_in[2].to(torch.bfloat16 if autocast else torch.float32), is_causal=True,
                    enable_gqa=kv_heads != heads)
                got = fn(*got_in[:2], got_in[2].to(torch.bfloat16 if autocast else torch.float32), scale=0.25)
            ref.backward(grad_out.to(ref.dtype))
            got.backward(grad_out.to(got.dtype))
            tol = dict(atol=3e-2, rtol=3e-2) if autocast else dict(atol=1e-5, rtol=1e-4)
            assert got.dtype == ref.dtype and torch.allclose(got.float(), ref.float(), **tol), (heads, autocast)
            for name, a, b in zip("qkv", got_in, ref_in):
                assert torch.allclose(a.grad, b.grad, **tol), (heads, autocast, name, (a.grad - b.grad).abs().max())


def test_recomputing_attention_backward_only_in_compiled_cpu_training():
    from xmodel.model.cpu_attention import MAX_SEQ_LEN, use_recomputing_backward
    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    assert not use_recomputing_backward(q, 8)  # eager: the flash backward is faster there
    decide = torch.compile(lambda t, n: t * use_recomputing_backward(t, n), fullgraph=True)
    assert decide(q, 8).equal(q)
    assert not decide(q, MAX_SEQ_LEN + 1).any()
    assert not decide(q.detach(), 8).any()  # inference: nothing to gain
