"""Int8 weight-only quantization for decoding: what it replaces, how far its logits move, and the CLI switch."""

import copy
import io
import sys

import pytest
import torch

from xmodel import XmodelForCausalLM
from xmodel.cli.main import main
from xmodel.errors import XmodelError
from xmodel.inference import Generator, SamplingParams
from xmodel.inference.quantize import Int8Linear, apply_quantization, quantize_int8
from xmodel.inference.runtime import load_generator

from .conftest import small_config
from .test_inference import chat_model_dir  # noqa: F401  (fixture)


def model(**overrides):
    torch.manual_seed(0)
    values = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=512, scale_emb=4.0, scale_depth=1.3, dim_model_base=32, initializer_range=0.2)
    values.update(overrides)
    return XmodelForCausalLM(small_config(**values)).eval()


def test_every_linear_becomes_int8_and_the_embedding_stays():
    m = model()
    linears = sum(isinstance(x, torch.nn.Linear) for x in m.modules())
    q = quantize_int8(copy.deepcopy(m))
    assert sum(isinstance(x, Int8Linear) for x in q.modules()) == linears
    assert not any(isinstance(x, torch.nn.Linear) for x in q.modules())
    assert q.model.embed_tokens.weight.dtype == torch.bfloat16
    assert q.lm_head.weight_int8.dtype == torch.int8 and q.lm_head.weight_int8.shape == (512, 128)
    # per-row absmax: every row uses the full int8 range once
    assert torch.all(q.lm_head.weight_int8.abs().amax(dim=1) == 127)


def test_int8_logits_stay_close_to_the_float_model():
    """int8 rounding moves the logits by little more than running the same model in bf16 does."""
    m = model()
    ids = torch.randint(3, 512, (4, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(ids).logits
        bf16 = copy.deepcopy(m).to(torch.bfloat16)(ids).logits.float()
        int8 = quantize_int8(copy.deepcopy(m))(ids).logits.float()
    err_int8, err_bf16 = (int8 - ref).abs().max(), (bf16 - ref).abs().max()
    assert err_int8 < 4 * err_bf16
    assert err_int8 < ref.std()
    assert (int8.argmax(-1) == ref.argmax(-1)).float().mean() > 0.85


def test_quantized_model_generates_through_the_engine(char_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(char_tokenizer_dir)
    m = model(vocab_size=80)
    gen = Generator(quantize_int8(copy.deepcopy(m)), tok)
    ref = Generator(copy.deepcopy(m), tok)
    prompt = [tok("hello there", add_special_tokens=False)["input_ids"]]
    params = [SamplingParams(max_new_tokens=12)]
    texts = gen.complete(prompt, params)[0]
    assert len(texts) == 1 and len(texts[0]) > 0
    first = lambda g: next(iter(g.stream(prompt, params)))[0].token_id  # noqa: E731
    assert first(gen) == first(ref)


def test_bad_quantization_name_is_one_line():
    with pytest.raises(XmodelError, match="--quantize: 'int4' is not one of none, int8"):
        apply_quantization(model(), "int4")


def test_chat_cli_with_int8(chat_model_dir, monkeypatch, capsys):  # noqa: F811
    gen = load_generator(chat_model_dir, quantize="int8")
    assert isinstance(gen.model.lm_head, Int8Linear)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/exit\n"))
    assert main(["chat", str(chat_model_dir), "--quantize", "int8", "--temperature", "0",
                 "--max-new-tokens", "5"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n"))
    with pytest.raises(SystemExit):
        main(["chat", str(chat_model_dir), "--quantize", "int4"])
