"""GGUF export: the file read back with gguf's reader, then (when llama-cpp-python is installed) run in llama.cpp.

Tokenizers are trained here with Hugging Face `tokenizers` on real text from the data root, in the three shapes
the writer supports: a SentencePiece-style Unigram with NFKC, split digits and byte fallback (Xmodel-2's kind),
a GPT-2-style byte-level BPE and a SentencePiece-style BPE.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGMLQuantizationType, TokenType
from gguf.quants import dequantize
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from xmodel import XmodelForCausalLM
from xmodel.cli.main import main
from xmodel.export.charsmap import build_charsmap, normalizer_mapping
from xmodel.export.gguf_file import export_gguf, permute_for_rope
from xmodel.export.llama import to_llama

from .conftest import small_config
from .real_text import corpus_texts, mixed_texts

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
BYTES = [f"<0x{i:02X}>" for i in range(256)]


def train_unigram(texts) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.Metaspace(prepend_scheme="first")])
    tok.decoder = decoders.Sequence([decoders.Metaspace(prepend_scheme="first"), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=5000, special_tokens=SPECIALS,
                                                           unk_token="<unk>", max_piece_length=16,
                                                           seed_size=40_000, n_sub_iterations=1))
    # Byte fallback: the 256 byte pieces go after the trained ones, below every trained score.
    learned = unigram_pieces(tok)
    floor = min(score for _, score in learned) - 1
    tok.model = models.Unigram(learned + [(b, floor) for b in BYTES], unk_id=SPECIALS.index("<unk>"),
                               byte_fallback=True)
    return _wrap(tok, "<s>", "</s>", "<unk>", "<pad>")


def unigram_pieces(tok: Tokenizer) -> list[tuple[str, float]]:
    return [tuple(x) for x in json.loads(tok.to_str())["model"]["vocab"]]


# The shape of the project's own tokenizer (xmodel.tokenizer): raw spaces, a regex pre-tokenizer, no normaliser.
PRE_TOKENIZE_PATTERN = r" ?[\p{L}\p{M}]+| ?[^\s\p{L}\p{M}\p{N}]+|\p{N}|\s+(?!\S)|\s+"


def train_raw_space_unigram(texts) -> PreTrainedTokenizerFast:
    from tokenizers import Regex

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PRE_TOKENIZE_PATTERN), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=5000, special_tokens=SPECIALS,
                                                           unk_token="<unk>", max_piece_length=16,
                                                           seed_size=40_000, n_sub_iterations=1))
    learned = unigram_pieces(tok)
    floor = min(score for _, score in learned) - 1
    tok.model = models.Unigram(learned + [(b, floor) for b in BYTES], unk_id=SPECIALS.index("<unk>"),
                               byte_fallback=True)
    return _wrap(tok, "<s>", "</s>", "<unk>", "<pad>")


def train_byte_level_bpe(texts) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _wrap(tok, "<|endoftext|>", "<|endoftext|>", None, None)


def train_sentencepiece_bpe(texts) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=3000, special_tokens=SPECIALS[:4] + BYTES,
                                                       limit_alphabet=1000))
    return _wrap(tok, "<s>", "</s>", "<unk>", "<pad>")


def _wrap(tok, bos, eos, unk, pad) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad)
    fast.chat_template = CHAT_TEMPLATE
    return fast


TRAINERS = {"unigram": train_unigram, "raw": train_raw_space_unigram, "bpe": train_byte_level_bpe,
            "spbpe": train_sentencepiece_bpe}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """kind → an Xmodel checkpoint with that tokenizer (non-neutral μP, random weights, vocab padded past it)."""
    texts = mixed_texts(0, 250, max_chars=3000)
    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for i, (kind, train) in enumerate(TRAINERS.items()):
        tokenizer = train(texts)
        torch.manual_seed(i)
        cfg = small_config(vocab_size=len(tokenizer) + 5, scale_emb=9.0, scale_depth=1.7, dim_model_base=16,
                           initializer_range=0.3, rope_theta=20000.0, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0)
        model = XmodelForCausalLM(cfg)
        model.save_pretrained(root / kind)
        tokenizer.save_pretrained(root / kind)
        out[kind] = root / kind
    return out


def held_out_texts():
    return mixed_texts(1000, 40, max_chars=1200)


def field(reader, key):
    return reader.fields[key].contents()


# ---- without llama.cpp ------------------------------------------------------------------------------------

def test_charsmap_reproduces_nfkc(tmp_path):
    nfkc = normalizers.NFKC()
    charsmap = normalizers.Precompiled(build_charsmap(normalizer_mapping(nfkc.normalize_str)))
    texts = mixed_texts(0, 300) + corpus_texts("zh", 5000, 300)
    changed = [t for t in texts if nfkc.normalize_str(t) != t]
    assert len(changed) > 100  # real text does exercise NFKC (full-width punctuation, ligatures, …)
    assert all(charsmap.normalize_str(t) == nfkc.normalize_str(t) for t in texts)
    every_char = [chr(c) for c in range(1, 0x30000) if not 0xD800 <= c <= 0xDFFF]
    assert [charsmap.normalize_str(c) for c in every_char] == [nfkc.normalize_str(c) for c in every_char]


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_unigram_gguf_reads_back(checkpoints, tmp_path, gguf_type):
    path, info = export_gguf(checkpoints["unigram"], tmp_path / "m.gguf", gguf_type)
    assert "tokenizer t5" in info and "no byte fallback" in info
    reader = GGUFReader(path)
    model = XmodelForCausalLM.from_pretrained(checkpoints["unigram"]).eval()
    cfg = model.config
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.block_count") == cfg.num_hidden_layers
    assert field(reader, "llama.attention.head_count_kv") == cfg.num_key_value_heads
    assert field(reader, "llama.rope.freq_base") == 20000.0
    assert np.isclose(field(reader, "llama.attention.layer_norm_rms_epsilon"), cfg.rms_norm_eps / 81, rtol=1e-6)

    tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoints["unigram"])
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    scores = field(reader, "tokenizer.ggml.scores")
    assert field(reader, "tokenizer.ggml.model") == "t5" and len(tokens) == cfg.vocab_size
    assert tokens[:len(tokenizer)] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert types[tokenizer.unk_token_id] == TokenType.UNKNOWN
    assert types[tokenizer.convert_tokens_to_ids("<|im_start|>")] == TokenType.CONTROL
    assert types[tokenizer.convert_tokens_to_ids("<0xE4>")] == TokenType.BYTE
    assert types[len(tokenizer):] == [TokenType.UNUSED] * 5
    word = tokenizer.convert_tokens_to_ids("▁the")
    assert types[word] == TokenType.NORMAL
    assert np.isclose(scores[word], dict(unigram_pieces(tokenizer.backend_tokenizer))["▁the"], rtol=1e-6)
    assert field(reader, "tokenizer.ggml.add_space_prefix") is True
    assert len(reader.fields["tokenizer.ggml.precompiled_charsmap"].data) > 1000
    assert field(reader, "tokenizer.ggml.bos_token_id") == tokenizer.bos_token_id
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE

    # Tensors: folded μP and the RoPE permutation, checked against the Llama export and this model's config.
    llama = to_llama(model)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 9 * cfg.num_hidden_layers and "output.weight" not in tensors  # tied
    two_d_type = GGMLQuantizationType.F16 if gguf_type == "f16" else GGMLQuantizationType.Q8_0
    assert tensors["blk.1.ffn_down.weight"].tensor_type == two_d_type
    assert tensors["output_norm.weight"].tensor_type == GGMLQuantizationType.F32

    def read(name):
        t = tensors[name]
        return dequantize(t.data, t.tensor_type).reshape(t.data.shape[0], -1) if t.data.ndim > 1 else t.data

    tol = 2e-3 if gguf_type == "f16" else 0.03
    expected = {
        "blk.1.ffn_down.weight": llama.model.layers[1].mlp.down_proj.weight,
        "blk.2.attn_q.weight": permute_for_rope(llama.model.layers[2].self_attn.q_proj.weight, cfg.num_attention_heads),
        "blk.2.attn_k.weight": permute_for_rope(llama.model.layers[2].self_attn.k_proj.weight, cfg.num_key_value_heads),
        "token_embd.weight": llama.model.embed_tokens.weight,
    }
    for name, want in expected.items():
        got = read(name)
        want = want.detach().numpy()
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= tol * np.abs(want).max(), name
    assert np.allclose(read("output_norm.weight"), model.model.norm.weight.detach().numpy() / cfg.width_mult)


def test_raw_space_unigram_gguf_reads_back(checkpoints, tmp_path):
    """Pieces with raw spaces are written with ▁ (llama.cpp escapes input spaces before matching)."""
    path, info = export_gguf(checkpoints["raw"], tmp_path / "raw.gguf", "f16")
    assert "no counterpart of the Split pre-tokenizer" in info
    reader = GGUFReader(path)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoints["raw"])
    tokens = field(reader, "tokenizer.ggml.tokens")
    hf_tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    with_space = [i for i, t in enumerate(hf_tokens) if " " in t and t not in SPECIALS]
    assert len(with_space) > 100 and all(tokens[i] == hf_tokens[i].replace(" ", "▁") for i in with_space)
    assert field(reader, "tokenizer.ggml.add_space_prefix") is False
    assert "tokenizer.ggml.precompiled_charsmap" not in reader.fields


def test_byte_level_bpe_gguf_reads_back(checkpoints, tmp_path):
    path, _ = export_gguf(checkpoints["bpe"], tmp_path / "bpe.gguf", "bf16")
    reader = GGUFReader(path)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoints["bpe"])
    assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == "gpt-2"
    merges = field(reader, "tokenizer.ggml.merges")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    assert merges == [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    assert field(reader, "tokenizer.ggml.tokens")[:len(tokenizer)] == tokenizer.convert_ids_to_tokens(
        list(range(len(tokenizer))))
    assert {t.name: t for t in reader.tensors}["blk.0.attn_v.weight"].tensor_type == GGMLQuantizationType.BF16


def test_export_gguf_cli_and_bad_inputs(checkpoints, tmp_path, capsys):
    assert main(["export", str(checkpoints["unigram"]), "--to", "gguf", str(tmp_path / "m.gguf"), "--type",
                 "q4_0"]) == 0
    assert "q4_0" in capsys.readouterr().out and (tmp_path / "m.gguf").is_file()
    assert not (tmp_path / "m.gguf.partial").exists()
    # A model without a fast tokenizer, a directory as output, a tokenizer larger than the model's vocabulary.
    model = XmodelForCausalLM(small_config())
    model.save_pretrained(tmp_path / "bare")
    assert main(["export", str(tmp_path / "bare"), "--to", "gguf", str(tmp_path / "b.gguf")]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
    assert main(["export", str(checkpoints["unigram"]), "--to", "gguf", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "bare"), "--to", "gguf", str(tmp_path / "c.gguf"), "--tokenizer",
                 str(checkpoints["unigram"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "do not fit the model's vocab_size=211" in err[-1] and len(err) == 1
    assert not list(tmp_path.glob("*.partial"))


# ---- in llama.cpp -----------------------------------------------------------------------------------------

def test_export_gguf_refuses_an_existing_file_unless_overwrite(checkpoints, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"an earlier export")
    assert main(["export", str(checkpoints["unigram"]), "--to", "gguf", str(out)]) == 2
    assert "exists (pass --overwrite to replace it)" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier export"
    assert main(["export", str(checkpoints["unigram"]), "--to", "gguf", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"GGUF"


def collapse_byte_runs(ids, tokenizer):
    """HF ids with each run of byte-fallback tokens replaced by one <unk>: what llama.cpp's Unigram gives."""
    out = []
    for i in ids:
        if tokenizer.convert_ids_to_tokens(i) in BYTES:
            if not out or out[-1] != tokenizer.unk_token_id:
                out.append(tokenizer.unk_token_id)
        else:
            out.append(i)
    return out


def greedy_torch(model, ids, steps):
    out = model.generate(torch.tensor([ids]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def greedy_llama_cpp(llm, ids, steps):
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(steps):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def llama_cpp_or_skip(gguf_path):
    """The llama_cpp module, after checking in a child process that it can evaluate this file here. A llama.cpp
    built for instructions this machine cannot run (AMX tiles in a sandbox that does not grant them, used for
    some weight types only) dies with SIGILL, which would take the whole test session down with it; the probe
    turns that into a skip that says why."""
    llama_cpp = pytest.importorskip("llama_cpp")
    code = ("import sys, llama_cpp; llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False); "
            "llm.eval(list(range(4, 36))); llm.close()")
    proc = subprocess.run([sys.executable, "-c", code, str(gguf_path)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        signal = f", killed by signal {-proc.returncode}" if proc.returncode < 0 else ""
        pytest.skip(f"llama.cpp cannot evaluate {gguf_path.name} on this machine (exit {proc.returncode}{signal}); "
                    "rebuild it portably: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --no-cache-dir llama-cpp-python")
    return llama_cpp


@pytest.mark.parametrize("kind", ["unigram", "raw", "bpe", "spbpe"])
def test_llama_cpp_tokenizes_like_tokenizers(checkpoints, tmp_path, kind):
    pytest.importorskip("llama_cpp")
    path, _ = export_gguf(checkpoints[kind], tmp_path / f"{kind}.gguf", "f16")
    llama_cpp = llama_cpp_or_skip(path)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoints[kind])
    llm = llama_cpp.Llama(str(path), n_ctx=64, verbose=False)
    try:
        texts = held_out_texts()
        with_bytes = ties = 0
        scores = dict(unigram_pieces(tokenizer.backend_tokenizer)) if kind in ("unigram", "raw") else {}
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            expected = ids
            if kind in ("unigram", "raw"):  # llama.cpp's Unigram has no byte fallback (see gguf_vocab.py)
                expected = collapse_byte_runs(ids, tokenizer)
                with_bytes += expected != ids
            got = llm.tokenize(text.encode(), add_bos=False, special=False)
            if got != expected and kind in ("unigram", "raw"):
                # Both are segmentations of the same text; llama.cpp's is the best-scoring one over the whole text.
                # With Metaspace pieces (unigram) that is tokenizers' own optimum, up to ties ("--|-" vs "-|--");
                # with a regex pre-tokenizer (raw) it may also join across tokenizers' pre-token boundaries.
                total = lambda seq: sum(scores[p] for p in tokenizer.convert_ids_to_tokens(seq))  # noqa: E731
                assert llm.detokenize(got) == llm.detokenize(expected)
                if kind == "unigram":
                    assert abs(total(got) - total(expected)) < 1e-3
                else:
                    assert total(got) >= total(expected) - 1e-3
                ties += 1
                continue
            assert got == expected, text[:80]
            # Decoding our ids (byte tokens included) gives the same text; llama.cpp keeps a leading space.
            decoded = llm.detokenize(ids).decode("utf-8")
            assert decoded.removeprefix(" ") == tokenizer.decode(ids).removeprefix(" ")
        assert with_bytes < len(texts) / 2 and ties <= len(texts) / (20 if kind == "unigram" else 2)
        special = llm.tokenize("<|im_start|>user\nHi<|im_end|>".encode(), add_bos=False, special=True)
        if kind in ("unigram", "raw"):  # chat-turn markers are single control tokens when specials are parsed
            assert special[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
            assert special[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    finally:
        llm.close()


@pytest.mark.parametrize("gguf_type", ["f32", "f16", "q8_0"])
def test_llama_cpp_greedy_continuations_match_pytorch(checkpoints, tmp_path, gguf_type):
    pytest.importorskip("llama_cpp")
    path, _ = export_gguf(checkpoints["unigram"], tmp_path / "m.gguf", gguf_type)
    llama_cpp = llama_cpp_or_skip(path)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoints["unigram"])
    model = XmodelForCausalLM.from_pretrained(checkpoints["unigram"]).eval()
    llm = llama_cpp.Llama(str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2)
    try:
        prompts = [t[:200] for t in mixed_texts(2000, 2)]
        steps = 16 if gguf_type != "q8_0" else 8
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:40]
            assert greedy_llama_cpp(llm, ids, steps) == greedy_torch(model, ids, steps), prompt[:60]
        # Logits themselves, on the first prompt: f32 agrees to float rounding.
        ids = tokenizer(prompts[0], add_special_tokens=False)["input_ids"][:40]
        llm.reset()
        llm.eval(ids)
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0].numpy()
        got = np.array(llm.scores[:len(ids)])
        tol = {"f32": 5e-3, "f16": 0.05, "q8_0": 0.3}[gguf_type]
        assert np.abs(got - expected).max() <= tol * np.abs(expected).max()
    finally:
        llm.close()
