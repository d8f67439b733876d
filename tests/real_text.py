"""Real text from the data root (`XMODEL_DATA_ROOT`, default ../shared/data beside the checkout) for tests."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest

CORPORA = {
    "en": "corpora/en/english_public_domain.jsonl.gz",
    "zh": "corpora/zh/chinese_prose_clue_lcsts.jsonl.gz",
    "code": "corpora/code/code_corpus.jsonl.gz",
}


def data_root() -> Path:
    """The project's data root (`xmodel.data.root`); before that module is merged, the same rule inline."""
    try:
        from xmodel.data.root import data_root as project_data_root
    except ImportError:  # this branch predates xmodel.data.root; remove this fallback once both are merged
        env = os.environ.get("XMODEL_DATA_ROOT")
        root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
        if not root.is_dir():
            pytest.fail(f"data root {root} not found: set XMODEL_DATA_ROOT to the shared data folder")
        return root
    return project_data_root()


def corpus_texts(kind: str, start: int, count: int, max_chars: int | None = None) -> list[str]:
    """`count` documents of corpus `kind` (en, zh, code) from record `start` on, each cut to `max_chars`."""
    with gzip.open(data_root() / CORPORA[kind], "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in itertools.islice(f, start, start + count)]
    return [t[:max_chars] for t in texts] if max_chars else texts


def mixed_texts(start: int, count_each: int, max_chars: int | None = None) -> list[str]:
    return [t for kind in CORPORA for t in corpus_texts(kind, start, count_each, max_chars)]
