"""Generation on CUDA: the engine against transformers' `generate` (fp32, left-padded batch), bf16 decoding, the
compiled decode step against the eager engine, and the OpenAI-compatible server over a model loaded on the device.
"""

import pytest
import torch
from transformers import AutoTokenizer

from xmodel import XmodelForCausalLM
from xmodel.inference import Generator, SamplingParams
from xmodel.inference.runtime import load_generator

from ..conftest import small_config
from ..test_inference import CHAT_TEMPLATE, tokens_of
from .common import DEVICE, MARKS

pytestmark = MARKS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small non-neutral μP model with a character tokenizer and a chat template, saved as a model folder."""
    from ..tokenizer_helpers import char_tokenizer

    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("cuda-serve") / "m"
    torch.manual_seed(0)
    XmodelForCausalLM(small_config(scale_emb=4.0, scale_depth=1.3, dim_model_base=32, initializer_range=0.5,
                                   vocab_size=80)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def on_device(path, dtype=torch.float32):
    model = XmodelForCausalLM.from_pretrained(path).to(DEVICE, dtype).eval()
    return Generator(model, AutoTokenizer.from_pretrained(path))


def hf_generate(model, prompt, n):
    out = model.generate(torch.tensor([prompt], device=model.device), max_new_tokens=n, min_new_tokens=n,
                         eos_token_id=None, pad_token_id=0, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_engine_greedy_equals_transformers_generate(model_dir):
    gen = on_device(model_dir)
    assert gen.device.type == torch.device(DEVICE).type
    torch.manual_seed(1)
    prompts = [torch.randint(4, 80, (n,)).tolist() for n in (3, 11, 7, 1)]
    got = tokens_of(gen, prompts, [SamplingParams(max_new_tokens=20)] * 4)
    for prompt, tokens in zip(prompts, got):
        assert tokens == hf_generate(gen.model, prompt, 20)


def test_engine_decodes_in_bf16(model_dir):
    """bf16 weights and cache: the first greedy token is the argmax of the model's own bf16 forward (up to bf16
    rounding between the padded batch and the lone prompt), every row gets its budget, and sampling with a seed
    repeats."""
    gen = on_device(model_dir, torch.bfloat16)
    assert gen.dtype == torch.bfloat16
    torch.manual_seed(2)
    prompts = [torch.randint(4, 80, (n,)).tolist() for n in (5, 9)]
    got = tokens_of(gen, prompts, [SamplingParams(max_new_tokens=16)] * 2)
    assert [len(t) for t in got] == [16, 16]
    with torch.no_grad():
        logits = gen.model(torch.tensor([prompts[1]], device=gen.device)).logits[0, -1].float()
    assert logits[got[1][0]] >= logits.max() - 2e-2 * logits.abs().max()
    seeded = [SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)]
    assert tokens_of(gen, prompts[:1], seeded) == tokens_of(gen, prompts[:1], seeded)


def test_compiled_decode_equals_the_eager_engine(model_dir):
    """`Generator(compile=True)`: each decode step one compiled graph (frozen weights, max-autotune GEMMs) on the
    device, decoding what the eager engine decodes (padded batch, fixed cache window)."""
    eager = on_device(model_dir)
    compiled = Generator(eager.model, eager.tokenizer, compile=True)
    torch.manual_seed(3)
    prompts = [torch.randint(4, 80, (n,)).tolist() for n in (9, 3, 6)]
    params = [SamplingParams(max_new_tokens=12)] * 3
    assert tokens_of(compiled, prompts, params) == tokens_of(eager, prompts, params)


def test_server_on_the_device(model_dir):
    """`xmodel serve`'s app over a generator loaded on the device: a greedy completion equals the engine's own,
    and a streamed chat completion equals the non-streamed one."""
    from fastapi.testclient import TestClient

    from xmodel.inference.server import ServerLimits, create_app

    generator = load_generator(model_dir, device=DEVICE)
    assert generator.device.type == torch.device(DEVICE).type
    app = create_app(generator, "m", ServerLimits(max_batch_size=4))
    with TestClient(app) as http:
        assert http.get("/health").json()["status"] == "ok"
        out = http.post("/v1/completions", json={"model": "m", "prompt": "Hello there", "max_tokens": 16,
                                                  "temperature": 0}).json()
        direct = generator.complete([generator.encode("Hello there")], [SamplingParams(max_new_tokens=16)])
        assert out["choices"][0]["text"] == direct[0][0]
        messages = [{"role": "user", "content": "What is two plus two?"}]
        full = http.post("/v1/chat/completions", json={"model": "m", "messages": messages, "max_tokens": 12,
                                                       "temperature": 0}).json()
        pieces = []
        with http.stream("POST", "/v1/chat/completions", json={"model": "m", "messages": messages,
                                                               "max_tokens": 12, "temperature": 0,
                                                               "stream": True}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    import json

                    for choice in json.loads(line[6:])["choices"]:
                        pieces.append(choice["delta"].get("content") or "")
        assert "".join(pieces) == full["choices"][0]["message"]["content"]
