"""SFT records of every shape in the data root → chat text, with deterministic rule-based diversification."""

import gzip
import json
from pathlib import Path

import pytest

from xmodel.data.config import SftFormatConfig
from xmodel.data.ingest import SkipRecord
from xmodel.data.sft import Diversifier, detect_schema, to_sample
from xmodel.tokenizer import IM_END, IM_START


SCHEMAS = {
    "sft/math/gsm8k_train.jsonl": "qa",
    "sft/math/mawps_train.llm_adapters.jsonl": "mawps",
    "sft/math/math_data_cot.llm_adapters.jsonl": "alpaca",
    "sft/code/mbpp_train.jsonl": "mbpp",
    "sft/code/new_codealpaca.jsonl": "alpaca",
    "sft/logic/logiqa_dev_en.jsonl": "logiqa",
    "sft/logic/logiqa_dev_zh.jsonl": "logiqa",
    "sft/general/alpaca_seed_tasks.jsonl": "seed_tasks",
    "sft/general/alpaca_data.jsonl.gz": "alpaca",
    "sft/commonsense/boolq_train.llm_adapters.jsonl": "alpaca",
}


def records(root: Path, rel: str, n: int = 30) -> list[dict]:
    opener = gzip.open if rel.endswith(".gz") else open
    with opener(root / rel, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


@pytest.mark.parametrize("rel,schema", SCHEMAS.items())
def test_every_shape_in_the_data_root_converts(shared_data, rel, schema):
    for rec in records(shared_data, rel):
        assert detect_schema(rec) == schema
        s = to_sample(rec)
        assert s.output and (s.instruction or s.input)
        assert s.output in s.canonical
    sample = to_sample(records(shared_data, "sft/logic/logiqa_dev_en.jsonl", 1)[0])
    assert sample.output == "The answer is A." and "A.The blood pressure" in sample.input


def test_bad_records_are_skips_with_a_reason():
    with pytest.raises(SkipRecord) as e:
        to_sample({"prompt": "x", "completion": "y"})
    assert e.value.reason == "unknown_schema" and "completion, prompt" in e.value.detail
    with pytest.raises(SkipRecord) as e:
        to_sample({"instruction": "x", "output": ""})
    assert e.value.reason == "empty_text"
    with pytest.raises(SkipRecord) as e:
        to_sample({"messages": [{"role": "user", "content": "hi"}]})
    assert e.value.reason == "bad_messages"
    s = to_sample({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    assert s.canonical == "hi\nyo"


def test_diversification_is_deterministic_varied_and_keeps_the_answer(shared_data):
    recs = records(shared_data, "sft/general/alpaca_data.jsonl.gz", 300)
    samples = []
    for r in recs:
        try:
            samples.append(to_sample(r))
        except SkipRecord:  # a few Alpaca records have an empty output
            pass
    assert len(samples) > 290
    div = Diversifier(SftFormatConfig())
    texts = []
    for uid, s in enumerate(samples):
        text, spans = div.format(s, uid, file_key=0)
        div.remember(0, s)
        assert [text[a:b] for a, b in spans] == [s.output + IM_END]
        assert text.count(IM_START) in (2, 3)  # user + assistant, maybe a system turn
        texts.append(text)
    again = Diversifier(SftFormatConfig())  # the same stream again: the same texts
    for uid, s in enumerate(samples):
        assert again.format(s, uid, 0)[0] == texts[uid]
        again.remember(0, s)
    heads = {t.split("\n", 2)[1].split(":")[0].split("：")[0] for t in texts if "\n" in t}
    assert len(heads) >= 5  # several instruction templates and casings
    assert sum("system\n" in t for t in texts) > 20
    assert sum(t.count("<|im_start|>user") == 1 and any(h in t for h in ("Examples:", "Here are some examples:",
               "Solved examples:")) for t in texts) > 10  # few-shot forms
    plain = Diversifier(SftFormatConfig(diversify=False))
    text, _ = plain.format(samples[1], 1, 0)
    assert text == f"{IM_START}user\n{samples[1].instruction}" + (f"\n\n{samples[1].input}" if samples[1].input else "") \
        + f"{IM_END}\n{IM_START}assistant\n{samples[1].output}{IM_END}\n"


def test_chinese_records_get_chinese_templates(shared_data):
    recs = records(shared_data, "sft/chinese/alpaca_zh_carbonz0.jsonl", 200)
    div = Diversifier(SftFormatConfig(system_prompt=1.0))
    texts = [div.format(to_sample(r), i, 0)[0] for i, r in enumerate(recs)]
    assert all("helpful assistant" not in t for t in texts)
    assert any("指令" in t or "问题" in t or "任务" in t for t in texts)
