"""Fixtures of the evaluation tests: the data root, a small BPE tokenizer trained on its real English text, and
a freshly initialised `nano` model made with `xmodel init` (the quickstart's trained model replaces it later)."""

import gzip
import json

import pytest

from xmodel.data.root import data_root as resolve_data_root

VOCAB = 2048


@pytest.fixture(scope="session")
def data_root():
    return resolve_data_root()


@pytest.fixture(scope="session")
def eval_tokenizer_dir(tmp_path_factory, data_root):
    """Byte-level BPE (2048 tokens) trained on public-domain English prose from the data root."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    with gzip.open(data_root / "corpora/en/english_public_domain.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 400:
                break
            texts.append(json.loads(line)["text"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    path = tmp_path_factory.mktemp("eval") / "tokenizer"
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def nano_model_dir(tmp_path_factory, eval_tokenizer_dir):
    from xmodel.cli.main import main

    out = tmp_path_factory.mktemp("eval") / "nano"
    assert main(["init", "nano", str(out), "--tokenizer", str(eval_tokenizer_dir), "--model.vocab_size", str(VOCAB),
                 "--model.pad_token_id", "0", "--model.bos_token_id", "1", "--model.eos_token_id", "2"]) == 0
    return out
