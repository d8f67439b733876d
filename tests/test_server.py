"""`xmodel serve`: the official openai client against the server on 127.0.0.1, plus malformed and hostile input."""

import concurrent.futures
import json
import socket
import threading
import time

import httpx
import openai
import pytest
import torch
import uvicorn
from transformers import AutoTokenizer

from xmodel import XmodelForCausalLM
from xmodel.inference import SamplingParams
from xmodel.inference.runtime import load_generator
from xmodel.inference.server import ServerLimits, create_app

from .conftest import small_config
from .test_inference import CHAT_TEMPLATE

MODEL = "tiny-chat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """uvicorn serving `app` in a background thread on a free loopback port."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'\n"))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{c: i + 4 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("serve") / "m"
    torch.manual_seed(0)
    XmodelForCausalLM(small_config(scale_emb=4.0, scale_depth=1.3, dim_model_base=32, initializer_range=0.5,
                                   vocab_size=80)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(model_dir):
    generator = load_generator(model_dir, max_batch_size=8)
    running = RunningServer(create_app(generator, MODEL, ServerLimits(max_body_bytes=64 * 1024,
                                                                       max_prompt_tokens=200,
                                                                       max_concurrent_requests=12,
                                                                       max_batch_size=8)))
    running.generator = generator
    yield running
    running.stop()


def direct(server, prompt_ids, max_tokens):
    """What the engine gives for this prompt alone, greedy: the reference for what the server returns."""
    return server.generator.complete([prompt_ids], [SamplingParams(max_new_tokens=max_tokens)])[0][0]


def test_models_health_and_completion(server):
    client = server.client()
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    out = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=24, temperature=0)
    prompt_ids = server.generator.encode("Hello there")
    assert out.choices[0].text == direct(server, prompt_ids, 24)
    assert out.usage.prompt_tokens == len(prompt_ids) and out.usage.completion_tokens <= 24
    assert out.choices[0].finish_reason in ("stop", "length")
    several = client.completions.create(model=MODEL, prompt=["ab", "cd"], max_tokens=5, temperature=0, n=2)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    assert several.choices[0].text == several.choices[1].text == direct(server, server.generator.encode("ab"), 5)


def test_chat_streaming_equals_non_streaming(server):
    client = server.client()
    messages = [{"role": "system", "content": "be short"}, {"role": "user", "content": "What is two plus two?"}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, reasons, usage = [], [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(pieces) == full.choices[0].message.content
    assert reasons[-1] == full.choices[0].finish_reason and usage.completion_tokens == full.usage.completion_tokens
    # Sampling with a seed is reproducible through the API.
    a = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=1.0, seed=5)
    b = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=1.0, seed=5)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_concurrent_clients_get_their_own_answers(server):
    """24 requests from 8 threads: batched together server-side, each answer equals its request run alone."""
    prompts = [f"prompt number {i} " + "x" * (i % 5) for i in range(24)]
    expected = {p: direct(server, server.generator.encode(p), 12) for p in prompts}

    def ask(prompt):
        return prompt, server.client().completions.create(model=MODEL, prompt=prompt, max_tokens=12,
                                                          temperature=0).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(ask, prompts))
    assert answers == expected


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="at most 200") as info:
        client.completions.create(model=MODEL, prompt="word " * 60, max_tokens=2)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="exceed the model's context"):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=1000)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=3)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError, match="exceed this server's batch size of 8"):
        client.completions.create(model=MODEL, prompt=["a", "b", "c"], n=3, max_tokens=2)
    raw = httpx.post(server.url + "/v1/chat/completions", content=b'{"model": "tiny-chat", "messages": [',
                     headers={"content-type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    big = json.dumps({"model": MODEL, "prompt": "a" * 100_000}).encode()
    raw = httpx.post(server.url + "/v1/completions", content=big, headers={"content-type": "application/json"})
    assert raw.status_code == 413 and raw.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit applies to what actually arrives
        yield b'{"model": "tiny-chat", "prompt": "'
        for _ in range(100):
            yield b"a" * 1000
        yield b'"}'

    raw = httpx.post(server.url + "/v1/completions", content=chunked(), headers={"content-type": "application/json"})
    assert raw.status_code == 413
    assert client.completions.create(model=MODEL, prompt="still alive", max_tokens=3).choices[0].text is not None


def test_client_disconnect_mid_stream_cancels_generation(model_dir):
    generator = load_generator(model_dir)
    forward = generator.model.forward
    slowed(generator, 0.03)  # 200 tokens take 6 s: longer than any delay of a loaded test machine
    running = RunningServer(create_app(generator, MODEL))
    try:
        worker = running.app.state.worker
        body = {"model": MODEL, "prompt": "tell me a long story", "max_tokens": 200, "temperature": 0, "stream": True}
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", running.url + "/v1/completions", json=body) as response:
                assert response.status_code == 200
                first = next(line for line in response.iter_lines() if line.startswith("data: "))
                assert json.loads(first[6:])["object"] == "text_completion"
            # leaving the block closes the connection mid-stream
        deadline = time.time() + 5  # well before the 6 s the 200 steps would take
        while worker.cancelled_sequences == 0:
            assert time.time() < deadline, "generation went on after the client left"
            time.sleep(0.05)
        generator.model.forward = forward
        out = running.client().completions.create(model=MODEL, prompt="next", max_tokens=4, temperature=0)
        assert out.choices[0].text == generator.complete([generator.encode("next")],
                                                         [SamplingParams(max_new_tokens=4)])[0][0]
    finally:
        generator.model.forward = forward
        running.stop()


def slowed(generator, seconds_per_step: float):
    """The generator with each forward pass delayed: a stand-in for a big model, so timing is not up to the host."""
    forward = generator.model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(seconds_per_step)
        return forward(*args, **kwargs)

    generator.model.forward = slow_forward
    return generator


def test_too_many_requests_in_flight_get_429(model_dir):
    generator = slowed(load_generator(model_dir, max_batch_size=1), 0.02)  # 150 tokens: ≥ 3 s per request
    running = RunningServer(create_app(generator, MODEL, ServerLimits(max_concurrent_requests=2, max_batch_size=1)))
    try:
        def ask(i):
            try:
                running.client().completions.create(model=MODEL, prompt=f"q{i}", max_tokens=150, temperature=0)
                return "ok"
            except openai.RateLimitError:
                return "429"

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(ask, range(6)))
        assert outcomes.count("ok") >= 2 and outcomes.count("429") >= 1
        assert running.client().completions.create(model=MODEL, prompt="after", max_tokens=2).choices
    finally:
        running.stop()


def test_api_key_is_enforced(model_dir):
    from fastapi.testclient import TestClient

    app = create_app(load_generator(model_dir), MODEL, ServerLimits(api_key="sekret"))
    with TestClient(app) as http:
        denied = http.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
        assert http.get("/health").status_code == 200


def test_api_key_is_compared_in_constant_time(model_dir, monkeypatch):
    import hmac

    from fastapi.testclient import TestClient

    compared = []

    def spy(given, expected):
        compared.append((given, expected))
        return real(given, expected)

    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", spy)
    app = create_app(load_generator(model_dir), MODEL, ServerLimits(api_key="sekret"))
    with TestClient(app) as http:
        assert http.get("/v1/models", headers={"Authorization": "Bearer sekre"}).status_code == 401
        assert http.get("/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
    assert compared == [(b"Bearer sekre", b"Bearer sekret"), (b"Bearer sekret", b"Bearer sekret")]


def test_api_key_from_the_environment_or_a_file(tmp_path, monkeypatch):
    from argparse import Namespace

    from xmodel.cli.serve import API_KEY_ENV, api_key_from
    from xmodel.errors import XmodelError

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert api_key_from(Namespace(api_key=None, api_key_file=None)) is None
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert api_key_from(Namespace(api_key=None, api_key_file=None)) == "from-env"
    (tmp_path / "key").write_text("from-file\n")
    assert api_key_from(Namespace(api_key=None, api_key_file=str(tmp_path / "key"))) == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(XmodelError, match="first line is empty"):
        api_key_from(Namespace(api_key=None, api_key_file=str(tmp_path / "empty")))


def test_errors_outside_the_routes_have_the_openai_shape(server):
    bad_utf8 = b'{"model": "tiny-chat", "prompt": "caf\xe9"}'
    raw = httpx.post(server.url + "/v1/completions", content=bad_utf8, headers={"content-type": "application/json"})
    assert raw.status_code == 400
    assert raw.json()["error"]["code"] == "invalid_json" and "not valid UTF-8" in raw.json()["error"]["message"]
    raw = httpx.get(server.url + "/v1/no-such-route")
    assert raw.status_code == 404 and raw.json()["error"]["type"] == "invalid_request_error"
    raw = httpx.delete(server.url + "/v1/models")
    assert raw.status_code == 405 and "error" in raw.json()
    assert server.client().completions.create(model=MODEL, prompt="still alive", max_tokens=2).choices


def test_serve_cli_refuses_bad_limits(model_dir, capsys):
    from xmodel.cli.main import main

    assert main(["serve", str(model_dir), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size: must be ≥ 1" in capsys.readouterr().err
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template == CHAT_TEMPLATE
