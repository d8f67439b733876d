"""Attention goes through transformers' registry: every implementation gives the same model, and on CPU the
default ("sdpa") runs Xmodel's "xmodel_cpu", whose recomputing backward serves compiled training only."""

import importlib.util

import pytest
import torch
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM

from xmodel import XmodelForCausalLM
from xmodel.model import cpu_attention
from xmodel.model.cpu_attention import CPU_ATTENTION

from ..conftest import small_config
from .call_count import counting


def padded_batch():
    ids = torch.randint(3, 211, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0   # left padding
    mask[2, -7:] = 0  # right padding
    return ids, mask


def test_default_is_sdpa_and_runs_as_xmodel_cpu_on_cpu(monkeypatch):
    model = XmodelForCausalLM(small_config()).eval()
    assert model.config._attn_implementation == "sdpa"
    counted, calls = counting(AttentionInterface._global_mapping[CPU_ATTENTION])
    monkeypatch.setitem(AttentionInterface._global_mapping, CPU_ATTENTION, counted)
    with torch.no_grad():
        model(torch.randint(3, 211, (2, 8)))
    assert len(calls) == model.config.num_hidden_layers
    model.set_attn_implementation("eager")
    with torch.no_grad():
        model(torch.randint(3, 211, (2, 8)))
    assert len(calls) == model.config.num_hidden_layers  # an explicit choice is run as it is


def test_recomputing_backward_where_it_was_chosen_before(monkeypatch):
    """Default attention, CPU: compiled training takes cpu_attention's causal_attention; eager training (padded
    or not) and inference keep SDPA's own backward, as before the registry."""
    torch.manual_seed(0)
    counted, calls = counting(cpu_attention.causal_attention)
    monkeypatch.setattr(cpu_attention, "causal_attention", counted)
    model = XmodelForCausalLM(small_config(num_hidden_layers=1))
    ids, mask = padded_batch()
    model(ids, labels=ids).loss.backward()  # eager training
    model(ids, attention_mask=mask, labels=ids).loss.backward()
    with torch.no_grad():
        model(ids)
    assert not calls
    step = torch.compile(lambda ids: model(ids, labels=ids).loss, dynamic=False)
    loss = step(ids)
    loss.backward()
    assert calls  # traced into the compiled graph
    with torch.no_grad():
        assert torch.allclose(loss, model(ids, labels=ids).loss, atol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "sdpa", CPU_ATTENTION, "flex_attention"])
def test_implementations_give_the_same_logits(implementation, tmp_path):
    torch.manual_seed(1)
    XmodelForCausalLM(small_config()).save_pretrained(tmp_path)
    ref = XmodelForCausalLM.from_pretrained(tmp_path, attn_implementation=CPU_ATTENTION).eval()
    model = XmodelForCausalLM.from_pretrained(tmp_path, attn_implementation=implementation).eval()
    assert model.config._attn_implementation == implementation
    ids, mask = padded_batch()
    keep = mask.bool()
    with torch.no_grad():
        try:
            got = model(ids).logits
        except Exception as e:  # flex attention compiles its kernel; skip where this torch cannot
            if implementation != "flex_attention":
                raise
            pytest.skip(f"flex attention does not run on this CPU torch: {type(e).__name__}")
        assert (got - ref(ids).logits).abs().max() <= 1e-5
        got, want = model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits
        assert (got[keep] - want[keep]).abs().max() <= 1e-5
        if implementation == "flex_attention":
            return  # decoding after a padded prompt hits an inductor CPU codegen error of flex attention in torch 2.13
        # Prefill of a left-padded batch, then decoding through the KV cache.
        prompts = dict(input_ids=ids[:2], attention_mask=mask[:2], max_new_tokens=4, do_sample=False,
                       output_logits=True, return_dict_in_generate=True)
        got, want = model.generate(**prompts), ref.generate(**prompts)
    assert torch.allclose(torch.stack(got.logits), torch.stack(want.logits), atol=1e-5)


def test_eager_training_gradients_match_the_default():
    torch.manual_seed(2)
    model = XmodelForCausalLM(small_config(dim_model_base=16, scale_emb=3.0, scale_depth=1.4))
    ids, mask = padded_batch()
    # What a padded position computes differs between implementations: no label at, or predicted from, one.
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
    grads = {}
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        grads[implementation] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, g in grads["sdpa"].items():
        assert torch.allclose(grads["eager"][n], g, atol=1e-6, rtol=1e-4), n


def test_xmodel_cpu_serves_other_transformers_models():
    """Registered with its mask function, "xmodel_cpu" works for Llama too (padding included)."""
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    llama = LlamaForCausalLM(config).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        want = llama(ids, attention_mask=mask).logits
        llama.set_attn_implementation(CPU_ATTENTION)
        got = llama(ids, attention_mask=mask).logits
    keep = mask.bool()
    assert (got[keep] - want[keep]).abs().max() <= 1e-5


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
                    reason="needs the flash_attn package and a CUDA GPU")
def test_flash_attention_2_is_accepted(tmp_path):
    torch.manual_seed(4)
    XmodelForCausalLM(small_config()).save_pretrained(tmp_path)
    kwargs = dict(dtype=torch.bfloat16, device_map="cuda")
    model = XmodelForCausalLM.from_pretrained(tmp_path, attn_implementation="flash_attention_2", **kwargs).eval()
    ref = XmodelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa", **kwargs).eval()
    assert model.config._attn_implementation == "flash_attention_2"
    ids, mask = (t.cuda() for t in padded_batch())
    keep = mask.bool()
    with torch.no_grad():
        got, want = model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits
    assert (got[keep].float() - want[keep].float()).abs().max() <= 2e-2
