"""Data prepared with an imported model's tokenizer: a byte-level BPE whose eos_token is an instruct template's
end-of-turn marker and whose chat template is not ours (as Qwen's or SmolLM2-Instruct's)."""

import gzip
import json

import numpy as np
import pytest

from xmodel.config.core import build_section
from xmodel.data.config import DataConfig
from xmodel.data.prepare import plan_preparation, prepare_data
from xmodel.data.shards import PackedDataset
from xmodel.errors import XmodelError

# A Qwen-like template: a default system turn when none is given, <|im_start|>role ... <|im_end|>.
TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def foreign_tokenizer(tmp_path_factory, shared_data):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    with gzip.open(shared_data / "corpora/en/english_public_domain.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(200), fh)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1200, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = TEMPLATE
    path = tmp_path_factory.mktemp("foreign") / "tokenizer"
    fast.save_pretrained(path)
    return path


def _config(**extra) -> DataConfig:
    return build_section(DataConfig, {
        "seq_len": 128, "tasks": 1, "workers": 1,
        "sources": [{"name": "en", "paths": ["corpora/en/english_public_domain.jsonl.gz"], "max_docs": 40}],
        "decay": {"sft_share": 0.5, "categories": {"math": 1.0},
                  "sft": {"math": [{"path": "sft/math/gsm8k_train.jsonl", "max_docs": 40}]}},
        "sft": {"diversify": False},
        "heldout": {"fraction": 0.0, "max_tokens": 0}, **extra}, "data")


def test_separator_is_the_base_models_end_of_text_unless_named(foreign_tokenizer, shared_data, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(foreign_tokenizer)
    plan = plan_preparation(_config(), foreign_tokenizer, tmp_path / "a", shared_data)
    assert plan.separator == "<|endoftext|>" and plan.eos_id == tok.convert_tokens_to_ids("<|endoftext|>")
    named = plan_preparation(_config(document_separator="<|im_end|>"), foreign_tokenizer, tmp_path / "b", shared_data)
    assert named.eos_id == tok.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(XmodelError, match="data.document_separator '<nope>': not a token of"):
        plan_preparation(_config(document_separator="<nope>"), foreign_tokenizer, tmp_path / "c", shared_data)


def test_sft_data_is_rendered_in_the_models_own_template(foreign_tokenizer, shared_data, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(foreign_tokenizer)
    logs = []
    manifest = prepare_data(_config(), foreign_tokenizer, tmp_path / "data", shared_data, progress=False,
                            log=logs.append)
    assert any("document separator: <|endoftext|>" in line for line in logs)
    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    sft = PackedDataset.of(manifest, "sft.math")
    row = sft[0]
    ids, mask = row["input_ids"], row["loss_mask"]
    text = tok.decode(ids.tolist(), skip_special_tokens=False)
    # The template's default system turn is there: the SFT documents are in the model's own format.
    assert "<|im_start|>system\nYou are a helpful assistant.<|im_end|>" in text
    assert any((sft[i]["input_ids"] == sep).any() for i in range(len(sft)))  # documents end with it
    trained = "".join(tok.decode(sft[i]["input_ids"][sft[i]["loss_mask"]].tolist(), skip_special_tokens=False)
                      for i in range(len(sft)))
    assert "<|im_start|>" not in trained and "<|im_end|>" in trained and "####" in trained  # GSM8K answers
    first_trained = int(np.argmax(mask))  # training starts right after the template's assistant opener
    assert tok.decode(ids[:first_trained].tolist(), skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    pretrain = PackedDataset.of(manifest, "en")
    assert any((np.asarray(pretrain[i]["input_ids"]) == sep).any() for i in range(len(pretrain)))


def test_a_template_that_cannot_render_sft_is_refused_up_front(foreign_tokenizer, shared_data, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(foreign_tokenizer, broken)
    cfg_file = broken / "tokenizer_config.json"
    config = json.loads(cfg_file.read_text())
    config["chat_template"] = "{{ raise_exception('System role not supported') }}"
    cfg_file.write_text(json.dumps(config))
    (broken / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(XmodelError, match="its chat template cannot render SFT data .*chat_template: xmodel"):
        plan_preparation(_config(), broken, tmp_path / "out", shared_data)
    plan_preparation(_config(sft={"diversify": False, "chat_template": "xmodel"}), broken, tmp_path / "out2",
                     shared_data)


def test_a_sentencepiece_only_tokenizer_prepares_data(shared_data, tmp_path):
    """A folder with only tokenizer.model (SentencePiece, byte fallback), as Llama-2-style releases ship it."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    with gzip.open(shared_data / "corpora/en/english_public_domain.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(200), fh)]
    folder = tmp_path / "sp"
    folder.mkdir()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(folder / "tokenizer"),
                                   vocab_size=800, model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, minloglevel=2)
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                                                              "eos_token": "</s>", "unk_token": "<unk>"}))
    cfg = build_section(DataConfig, {"seq_len": 64, "tasks": 1, "workers": 1, "heldout": {"fraction": 0.0,
                        "max_tokens": 0}, "sources": [{"name": "en", "paths": ["corpora/en/english_public_domain.jsonl.gz"],
                                                       "max_docs": 20}]}, "data")
    manifest = prepare_data(cfg, folder, tmp_path / "data", shared_data, progress=False, log=lambda *_: None)
    row = PackedDataset.of(manifest, "en")[0]["input_ids"]
    reference = AutoTokenizer.from_pretrained(folder)
    first = reference(texts[0], add_special_tokens=False).input_ids
    assert list(row[:16]) == first[:16]  # the same ids as the model's own tokenizer gives

