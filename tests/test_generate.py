"""`generate` through transformers: KV cache, left padding and sampling."""

import torch

from xmodel import XmodelForCausalLM

from .conftest import small_config


def greedy_by_recompute(model, ids, steps):
    for _ in range(steps):
        with torch.no_grad():
            nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def test_cached_greedy_equals_full_recompute():
    torch.manual_seed(0)
    model = XmodelForCausalLM(small_config(scale_emb=4.0, scale_depth=1.3, dim_model_base=32)).eval()
    prompt = torch.randint(3, 211, (1, 7))
    cached = model.generate(prompt, max_new_tokens=32, do_sample=False, eos_token_id=None, min_new_tokens=32)
    assert cached.shape[1] == 7 + 32
    assert torch.equal(cached, greedy_by_recompute(model, prompt, 32))


def test_generate_uses_the_cache_it_is_given():
    """Each step's scores equal a full recompute over the whole context. A random model's greedy tokens barely
    depend on the context (it repeats one token), so the scores are compared, not only the tokens: a model that
    dropped the cache transformers passes (`cache=` since transformers 5.x) would see one token per step."""
    torch.manual_seed(0)
    model = XmodelForCausalLM(small_config(initializer_range=0.2)).eval()
    prompt = torch.randint(3, 211, (1, 9))
    out = model.generate(prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False, eos_token_id=None,
                         output_scores=True, return_dict_in_generate=True)
    for step, scores in enumerate(out.scores):
        with torch.no_grad():
            full = model(out.sequences[:, :9 + step], use_cache=False).logits[:, -1]
        torch.testing.assert_close(scores, full, rtol=1e-4, atol=1e-4)


def test_left_padded_batch_equals_one_by_one():
    torch.manual_seed(1)
    model = XmodelForCausalLM(small_config()).eval()
    prompts = [torch.randint(3, 211, (n,)) for n in (4, 9, 6)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None,
                           pad_token_id=0)
    for i, p in enumerate(prompts):
        single = model.generate(p[None], max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert torch.equal(batch[i, width:], single[0, len(p):]), i


def test_sampling_is_seeded_and_varies():
    model = XmodelForCausalLM(small_config()).eval()
    prompt = torch.randint(3, 211, (1, 5))

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(prompt, max_new_tokens=20, do_sample=True, temperature=1.5, top_k=50,
                              eos_token_id=None, pad_token_id=0)

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))


def test_generate_cli_caps_max_new_tokens_to_the_context(tmp_path, char_tokenizer_dir, capsys):
    """A budget beyond the model's context is cut to what the context leaves after the prompt, and said so."""
    from xmodel.cli.main import main
    from xmodel.model.loading import CHECKSUM_FILE, save_model

    torch.manual_seed(0)
    save_model(XmodelForCausalLM(small_config(max_position_embeddings=16)), tmp_path / "m")
    for f in char_tokenizer_dir.iterdir():
        (tmp_path / "m" / f.name).write_bytes(f.read_bytes())
    assert (tmp_path / "m" / CHECKSUM_FILE).is_file()
    assert main(["generate", str(tmp_path / "m"), "--prompt", "hello", "--max-new-tokens", "100"]) == 0
    err = capsys.readouterr().err
    assert "--max-new-tokens 100 capped to 11 (the model's context is 16 tokens, the prompt takes 5)" in err
