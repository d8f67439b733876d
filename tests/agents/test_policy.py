"""The model as a policy: the shared-prefix cache changes nothing but speed, stop strings cut completions, and
prompts longer than the context are cut from the left and recorded."""

from xmodel.eval.agents import qa
from xmodel.eval.agents.policy import GenerationSettings, LMPolicy, cut_at_stop


def _requests(data_root, wiki, n=4):
    items = qa.load_hotpotqa(data_root, wiki, "covered", n)
    episodes = qa.make_episodes(items, qa.load_prompt(data_root, "hotpotqa"), wiki)
    for ep in episodes:
        ep.start()
    reqs = [ep.request() for ep in episodes]
    reqs[1].text += "Thought 1: a longer episode text, so the batch needs padding\n"
    return reqs


def test_prefix_cache_equals_plain_and_one_by_one(nano, data_root, wiki):
    model, tok = nano
    reqs = _requests(data_root, wiki, 3)
    cached = LMPolicy(model, tok, GenerationSettings(max_new_tokens=8, prefix_cache=True)).complete(reqs)
    plain_policy = LMPolicy(model, tok, GenerationSettings(max_new_tokens=8, prefix_cache=False))
    assert plain_policy.complete(reqs) == cached
    assert [plain_policy.complete([r])[0] for r in reqs] == cached
    assert all(isinstance(c, str) for c in cached)


def test_stop_strings_and_left_truncation(nano, data_root, wiki):
    model, tok = nano
    assert cut_at_stop("Search[x]\nObservation 1: y", ["\nObservation 1:"]) == "Search[x]"
    reqs = _requests(data_root, wiki, 2)
    policy = LMPolicy(model, tok, GenerationSettings(max_new_tokens=8))
    policy.max_prompt = 300      # as if the context were 308 tokens
    out = policy.complete(reqs)
    assert len(out) == 2
    assert all(r.episode.prompt_tokens_dropped > 1500 for r in reqs)
