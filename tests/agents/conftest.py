"""Fixtures of the agent tests: the data root, the offline Wikipedia built from it, a small BPE tokenizer trained
on the data root's ReAct prompts and passages, and a fresh 2-layer `nano` model made with `xmodel init` (the
quickstart's trained nano model replaces it later)."""

import json

import pytest

from xmodel.data.root import data_root as resolve_data_root

VOCAB = 2048


@pytest.fixture(scope="session")
def data_root():
    return resolve_data_root()


@pytest.fixture(scope="session")
def wiki(data_root):
    from xmodel.eval.agents.suite import offline_wiki

    return offline_wiki(str(data_root))


@pytest.fixture(scope="session")
def agent_tokenizer_dir(tmp_path_factory, data_root):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    react = data_root / "eval" / "react"
    texts = []
    for name in ("prompts_naive.json", "fever.json", "alfworld_3prompts.json"):
        texts += list(json.loads((react / "prompts" / name).read_text(encoding="utf-8")).values())
    with (react / "wiki_passages.jsonl").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 1500:
                break
            texts.append(" ".join(json.loads(line)["sentences"]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    path = tmp_path_factory.mktemp("agents") / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def nano_model_dir(tmp_path_factory, agent_tokenizer_dir):
    from xmodel.cli.main import main

    out = tmp_path_factory.mktemp("agents") / "nano"
    assert main(["init", "nano", str(out), "--tokenizer", str(agent_tokenizer_dir), "--model.vocab_size",
                 str(VOCAB), "--model.num_hidden_layers", "2", "--model.pad_token_id", "0",
                 "--model.bos_token_id", "1", "--model.eos_token_id", "2"]) == 0
    return out


@pytest.fixture(scope="session")
def nano(nano_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(nano_model_dir).eval(),
            AutoTokenizer.from_pretrained(nano_model_dir))
