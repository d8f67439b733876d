"""Shared fixtures of the tokenizer and data tests: a small config over real files of the data root, a tokenizer
trained on it and a prepared directory (each built once per test session).

tests/conftest.py imports the fixtures, so every test module can use them by name.
"""

from __future__ import annotations

import pytest

from xmodel.config.core import build_section
from xmodel.data.config import DataConfig
from xmodel.data.root import data_root

SMALL = {
    "seq_len": 256,
    "tasks": 4,
    "workers": 2,
    "tokenizer": {"vocab_size": 4000, "sample_chars": 400_000},
    "sources": [
        {"name": "en", "paths": ["corpora/en/english_public_domain.jsonl.gz"], "language": "en", "weight": 0.4,
         "max_docs": 300},
        {"name": "zh", "paths": ["corpora/zh/chinese_prose_clue_lcsts.jsonl.gz"], "language": "zh", "weight": 0.3,
         "max_docs": 3000},
        {"name": "code", "paths": ["corpora/code/code_corpus.jsonl.gz"], "language": "code", "weight": 0.3,
         "max_docs": 200},
    ],
    "decay": {
        "sft_share": 0.64,
        "categories": {"math": 0.3, "code": 0.2, "logic": 0.2, "knowledge": 0.15, "commonsense": 0.15},
        "sft": {
            "math": [{"path": "sft/math/gsm8k_train.jsonl", "max_docs": 400},
                     {"path": "sft/math/mawps_train.llm_adapters.jsonl", "max_docs": 200}],
            "code": [{"path": "sft/code/code_alpaca_2k.jsonl", "max_docs": 400},
                     {"path": "sft/code/mbpp_train.jsonl", "max_docs": 100}],
            "logic": [{"path": "sft/logic/logiqa_dev_en.jsonl", "max_docs": 200},
                      {"path": "sft/logic/logiqa_dev_zh.jsonl", "max_docs": 100}],
            "knowledge": [{"path": "sft/general/alpaca_data.jsonl.gz", "max_docs": 500},
                          {"path": "sft/general/alpaca_seed_tasks.jsonl"}],
            "commonsense": [{"path": "sft/commonsense/boolq_train.llm_adapters.jsonl", "max_docs": 500},
                            {"path": "sft/commonsense/arc_easy_train.llm_adapters.jsonl", "max_docs": 300}],
        },
    },
    "heldout": {"fraction": 0.05, "max_tokens": 20_000},
}


def small_data_config(**overrides) -> DataConfig:
    return build_section(DataConfig, {**SMALL, **overrides}, "data")


@pytest.fixture(scope="session")
def shared_data():
    return data_root()


@pytest.fixture(scope="session")
def small_cfg(shared_data):
    return small_data_config()


@pytest.fixture(scope="session")
def tokenizer_dir(small_cfg, shared_data, tmp_path_factory):
    from xmodel.tokenizer import train_tokenizer

    return train_tokenizer(small_cfg, tmp_path_factory.mktemp("tok") / "tokenizer", shared_data, log=lambda *_: None)


@pytest.fixture(scope="session")
def prepared(small_cfg, tokenizer_dir, shared_data, tmp_path_factory):
    from xmodel.data.prepare import prepare_data

    return prepare_data(small_cfg, tokenizer_dir, tmp_path_factory.mktemp("prep") / "data", shared_data,
                        progress=False, log=lambda *_: None)
