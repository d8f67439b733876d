"""With neutral μP settings an Xmodel is exactly a Llama model."""

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
