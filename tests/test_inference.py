"""The generation engine (static KV cache, batching, sampling, stop rules), streamed text and the chat REPL."""

import io
import sys
import threading

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from xmodel import XmodelForCausalLM
from xmodel.cli.main import main
from xmodel.errors import XmodelError
from xmodel.inference import Generator, SamplingParams
from xmodel.inference.engine import CompiledDecodeStep
from xmodel.inference.chat import ChatSession
from xmodel.inference.runtime import load_generator
from xmodel.inference.text import IncrementalDetokenizer, StopStringFilter

from .conftest import small_config

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant\n{% endif %}")


@pytest.fixture
def chat_model_dir(tmp_path, char_tokenizer_dir):
    """A small non-neutral μP model saved with the character tokenizer and a chat template."""
    torch.manual_seed(0)
    model = XmodelForCausalLM(small_config(scale_emb=4.0, scale_depth=1.3, dim_model_base=32,
                                           initializer_range=0.5, vocab_size=80))
    model.save_pretrained(tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(char_tokenizer_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def make_generator(path, stop_ids=()):
    model = XmodelForCausalLM.from_pretrained(path).eval()
    return Generator(model, AutoTokenizer.from_pretrained(path), set(stop_ids))


def greedy(n, **kw):
    return SamplingParams(max_new_tokens=n, **kw)


def tokens_of(generator, prompts, params):
    out = [[] for _ in prompts]
    for step in generator.stream(prompts, params):
        for o in step:
            if o.token_id is not None:
                out[o.index].append(o.token_id)
    return out


def hf_generate(model, prompt, n, **kw):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, eos_token_id=None,
                         pad_token_id=0, **kw)
    return out[0, len(prompt):].tolist()


def test_batched_greedy_with_left_padding_equals_transformers_generate(chat_model_dir):
    gen = make_generator(chat_model_dir)
    torch.manual_seed(1)
    prompts = [torch.randint(4, 80, (n,)).tolist() for n in (3, 11, 7, 1)]
    got = tokens_of(gen, prompts, [greedy(20)] * 4)
    for prompt, tokens in zip(prompts, got):
        assert tokens == hf_generate(gen.model, prompt, 20, do_sample=False)


def test_repetition_penalty_matches_transformers(chat_model_dir):
    gen = make_generator(chat_model_dir)
    prompt = gen.encode("the cat sat on the mat")
    got = tokens_of(gen, [prompt], [greedy(24, repetition_penalty=1.8)])[0]
    assert got == hf_generate(gen.model, prompt, 24, do_sample=False, repetition_penalty=1.8)
    assert got != tokens_of(gen, [prompt], [greedy(24)])[0]  # the penalty changes this continuation


def test_per_sequence_sampling_settings_in_one_batch(chat_model_dir):
    gen = make_generator(chat_model_dir)
    prompt = gen.encode("Once upon a time")
    base = tokens_of(gen, [prompt], [greedy(16)])[0]
    sample = lambda seed: SamplingParams(max_new_tokens=16, temperature=1.5, seed=seed)  # noqa: E731
    rows = tokens_of(gen, [prompt] * 5, [greedy(16), sample(7), sample(7), sample(8),
                                         SamplingParams(max_new_tokens=16, temperature=1.5, top_k=1, seed=3)])
    assert rows[0] == base          # a greedy row is unaffected by sampled neighbours
    assert rows[1] == rows[2]       # same seed, same sample
    assert rows[1] != rows[3]       # different seed, different sample
    assert rows[4] == base          # top-k 1 is greedy whatever the temperature
    nucleus = tokens_of(gen, [prompt], [SamplingParams(max_new_tokens=16, temperature=1.0, top_p=1e-6, seed=1)])
    assert nucleus[0] == base       # a tiny top-p keeps only the most likely token


def test_stop_strings_eos_and_budgets(chat_model_dir):
    gen = make_generator(chat_model_dir)
    prompt = gen.encode("Hello world")
    texts, reasons, usage = gen.complete([prompt], [greedy(40)])
    full = texts[0]
    assert reasons == ["length"] and usage.completion_tokens == [40] and len(full) > 10
    stop = full[5:8]
    texts, reasons, _ = gen.complete([prompt], [greedy(40, stop=(stop, "never there"))])
    assert texts[0] == full[:full.index(stop)] and reasons == ["stop"]
    # An EOS token (here: the first one the model emits that it had not emitted before, at step k ≥ 3) ends
    # the sequence; rows keep their own budgets.
    tokens = tokens_of(gen, [prompt], [greedy(40)])[0]
    k = next(i for i in range(2, 40) if tokens[i] not in tokens[:i])
    eos_gen = Generator(gen.model, gen.tokenizer, {tokens[k]})
    texts, reasons, usage = eos_gen.complete([prompt, prompt], [greedy(40), greedy(2)])
    assert reasons == ["stop", "length"] and usage.completion_tokens == [k + 1, 2]
    with pytest.raises(XmodelError, match="exceeds the model's context"):
        gen.complete([prompt], [greedy(300)])
    with pytest.raises(XmodelError, match="top_p"):
        SamplingParams(top_p=0).validate()


def test_cancelling_one_sequence_leaves_the_others(chat_model_dir):
    gen = make_generator(chat_model_dir)
    prompt = gen.encode("abc")
    stop_first = threading.Event()
    seen = [0, 0]
    reasons = {}
    for step in gen.stream([prompt, prompt], [greedy(30), greedy(30)], [stop_first, None]):
        for o in step:
            seen[o.index] += o.token_id is not None
            if o.finish_reason:
                reasons[o.index] = o.finish_reason
        if seen[0] == 5:
            stop_first.set()
    assert reasons == {0: "cancelled", 1: "length"} and seen == [5, 30]


def byte_fallback_tokenizer() -> PreTrainedTokenizerFast:
    """A Unigram tokenizer whose Chinese characters exist only as UTF-8 bytes (byte fallback)."""
    pieces = [("<unk>", 0.0), ("▁hello", -1.0), ("▁", -2.0), ("h", -3.0), ("e", -3.0), ("l", -3.0), ("o", -3.0)]
    pieces += [(f"<0x{i:02X}>", -10.0) for i in range(256)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_incremental_detokenizer_waits_for_whole_characters():
    tok = byte_fallback_tokenizer()
    text = "hello 你好 hello"
    ids = tok(text)["input_ids"]
    assert sum(t.startswith("<0x") for t in tok.convert_ids_to_tokens(ids)) == 6
    prompt, continuation = ids[:1], ids[1:]
    detok = IncrementalDetokenizer(tok, prompt)
    pieces = [detok.push(i) for i in continuation]
    assert all("\ufffd" not in p for p in pieces)
    assert tok.decode(prompt) + "".join(pieces) + detok.flush() == tok.decode(ids)
    assert pieces[:4] == [" ", "", "", "你"]  # the 3 bytes of 你 come out as one character


def test_stop_string_filter_holds_back_possible_starts():
    f = StopStringFilter(["STOP", "halt"])
    assert f.push("abc S") == ("abc ", False)
    assert f.push("T") == ("", False)
    assert f.push("x ha") == ("STx ", False)
    assert f.push("lt more") == ("", True)
    g = StopStringFilter(["END"])
    assert g.push("the E") == ("the ", False) and g.flush() == "E"


def test_chat_session_keeps_and_trims_history(chat_model_dir):
    gen = make_generator(chat_model_dir)
    session = ChatSession(gen, greedy(12), system="be brief")
    first = "".join(session.reply("hi there"))
    assert session.messages[-1] == {"role": "assistant", "content": first}
    rendered = gen.tokenizer.decode(session.prompt_ids())
    assert rendered.startswith("system\nbe brief\nuser\nhi there\nassistant\n" + first)
    # The reply streamed equals a direct completion of the rendered prompt.
    session.reset()
    ids = gen.tokenizer(gen.tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
        add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
    assert "".join(session.reply("hi there")) == gen.complete([ids], [greedy(12)])[0][0]
    # Long conversations drop their oldest turns to fit the 256-token context.
    long = ChatSession(gen, greedy(60))
    for i in range(4):
        "".join(long.reply(f"message number {i} " + "x" * 40))
    assert len(long.prompt_ids()) <= 256 - 60 and long.turns[0]["content"] != "message number 0 " + "x" * 40
    with pytest.raises(XmodelError, match="message too long"):
        "".join(long.reply("y" * 220))


def test_chat_cli_reads_turns_from_stdin(chat_model_dir, monkeypatch, capsys):
    gen = load_generator(chat_model_dir)  # as the CLI loads it: the tokenizer's EOS ends a reply
    session = ChatSession(gen, greedy(10))
    expected = ["".join(session.reply("hello")), "".join(session.reply("again"))]
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nagain\n/reset\n/exit\nnever read\n"))
    assert main(["chat", str(chat_model_dir), "--temperature", "0", "--max-new-tokens", "10"]) == 0
    out = capsys.readouterr()
    assert out.out.split("\n")[:2] == expected and "conversation reset" in out.err
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n"))
    assert main(["chat", str(chat_model_dir), "--top-p", "0"]) == 2
    assert "top_p: must be in (0, 1]" in capsys.readouterr().err


def test_chat_cli_refuses_a_line_that_is_not_utf8_and_goes_on(chat_model_dir, monkeypatch, capsys):
    gen = load_generator(chat_model_dir)
    expected = "".join(ChatSession(gen, greedy(10)).reply("hello"))
    # Raw bytes from a terminal in another encoding, and the same read by Python's stdin under a C locale
    # (surrogateescape): both are one error line for that line; the next line is answered as usual.
    for stdin in (io.TextIOWrapper(io.BytesIO(b"caf\xe9 au lait\nhello\n"), encoding="utf-8"),
                  io.StringIO("caf\udce9 au lait\nhello\n")):
        monkeypatch.setattr(sys, "stdin", stdin)
        assert main(["chat", str(chat_model_dir), "--temperature", "0", "--max-new-tokens", "10"]) == 0
        out = capsys.readouterr()
        errors = [line for line in out.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "not valid UTF-8" in errors[0] and "Traceback" not in out.err
        assert out.out.split("\n")[0] == expected


def test_decode_buckets_are_powers_of_two_and_window_multiples():
    bucket = CompiledDecodeStep.bucket
    assert bucket(1, 40) == (1, 256) and bucket(3, 256) == (4, 256) and bucket(5, 257) == (8, 512)
    assert bucket(8, 1000) == (8, 1024)


@pytest.mark.slow
def test_compiled_decode_gives_the_eager_engines_output(chat_model_dir):
    """The compiled path (padded batch, fixed cache window, 4-D mask) decodes what the eager engine decodes:
    left padding, per-row sampling, repetition penalty, stop strings, budgets; one compile serves every
    request of the same bucket."""
    eager = make_generator(chat_model_dir)
    compiled = Generator(eager.model, eager.tokenizer, eager.stop_token_ids, compile=True)
    torch.manual_seed(2)
    prompts = [torch.randint(4, 80, (n,)).tolist() for n in (9, 3, 6, 4)]
    params = [greedy(24), SamplingParams(max_new_tokens=24, temperature=1.2, top_p=0.9, seed=5),
              greedy(12, repetition_penalty=1.5)]
    assert tokens_of(compiled, prompts[:3], params) == tokens_of(eager, prompts[:3], params)  # 3 rows → 4
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    stop = eager.complete(prompts[:1], [greedy(30)])[0][0][4:7]
    params = [greedy(30, stop=(stop,)), greedy(7), greedy(5), greedy(40)]
    got = compiled.complete(prompts, params)
    assert got[:2] == eager.complete(prompts, params)[:2]
    assert got[1] == ["stop", "length", "length", "length"] and got[2].completion_tokens[1:] == [7, 5, 40]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # same bucket, same graph
    assert compiled.decode_step.shapes == {(4, 256)}
    # A second model of the same shape gets its own graphs (the first one's weights are frozen into its graph).
    torch.manual_seed(3)
    other = XmodelForCausalLM(small_config(vocab_size=80, initializer_range=0.5)).eval()
    other_params = [greedy(16)] * 4
    other_tokens = tokens_of(Generator(other, eager.tokenizer, compile=True), prompts, other_params)
    assert other_tokens == tokens_of(Generator(other, eager.tokenizer), prompts, other_params)
    assert other_tokens != tokens_of(compiled, prompts, other_params)
