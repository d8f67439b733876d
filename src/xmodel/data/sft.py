"""Instruction data → chat-formatted training text, with rule-based prompt diversification.

`to_sample` turns a record of one of the shapes in the data root's ``sft/`` folder (alpaca-style
instruction/input/output, question/answer, MAWPS, MBPP, LogiQA, self-instruct seed tasks, or chat
``messages``) into a `Sample`. `Diversifier.format` renders a sample as a conversation: the Xmodel-2 report
diversifies SFT prompts with rule-based transformations, so each record gets, from a seeded hash of its id,
one of several instruction templates, a separator, a casing of the field labels, optionally a system turn and
optionally a few solved examples of the same file (few-shot form) — the same record always gets the same text.
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass

from ..tokenizer.special import ROLES, ChatRenderer
from .config import SftFormatConfig
from .ingest import SkipRecord

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


@dataclass(frozen=True)
class Sample:
    """One instruction example. `messages` is set for chat data (then the other fields are unused)."""

    instruction: str = ""
    input: str = ""
    output: str = ""
    messages: tuple = ()

    @property
    def canonical(self) -> str:
        """The content without any template: what dedup and the held-out split look at."""
        if self.messages:
            return "\n".join(m["content"] for m in self.messages)
        return "\n".join(x for x in (self.instruction, self.input, self.output) if x)

    @property
    def chinese(self) -> bool:
        """Whether the instruction is Chinese (then Chinese field labels and system prompts are used)."""
        text = "".join(self.instruction.split())
        return len(CJK.findall(text)) * 4 > len(text)


def _str(rec: dict, key: str, required: bool = True) -> str:
    value = rec.get(key)
    if value is None:
        if required:
            raise SkipRecord("missing_field", f"no field {key!r}; fields: {', '.join(list(rec)[:8])}")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    if not isinstance(value, str):
        raise SkipRecord("not_text", f"{key!r} is a {type(value).__name__}")
    return value.strip()


def detect_schema(rec: dict) -> str:
    keys = set(rec)
    if "messages" in keys:
        return "messages"
    if {"instruction", "instances"} <= keys:
        return "seed_tasks"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"context", "question", "options"} <= keys:
        return "logiqa"
    if {"question", "answer"} <= keys:
        return "qa"
    if {"original_text", "equation"} <= keys:
        return "mawps"
    if {"text", "code"} <= keys:
        return "mbpp"
    raise SkipRecord("unknown_schema", f"fields: {', '.join(sorted(keys)[:8])}")


def to_sample(rec: dict, schema: str = "auto") -> Sample:
    """A record as a Sample; raises SkipRecord (counted by the caller) when it does not fit the schema."""
    if not isinstance(rec, dict):
        raise SkipRecord("unknown_schema", "a plain-text line, not an SFT record")
    schema = detect_schema(rec) if schema == "auto" else schema
    if schema == "messages":
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise SkipRecord("bad_messages", "'messages' must be a non-empty list")
        out = []
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise SkipRecord("bad_messages", "each message needs role (system/user/assistant) and content")
            out.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "assistant" for m in out):
            raise SkipRecord("bad_messages", "no assistant turn")
        return Sample(messages=tuple(out))
    if schema == "alpaca":
        sample = Sample(_str(rec, "instruction"), _str(rec, "input", False), _str(rec, "output"))
    elif schema == "seed_tasks":
        inst = rec.get("instances")
        if not isinstance(inst, list) or not inst or not isinstance(inst[0], dict):
            raise SkipRecord("missing_field", "no instances")
        sample = Sample(_str(rec, "instruction"), _str(inst[0], "input", False), _str(inst[0], "output"))
    elif schema == "qa":
        sample = Sample(_str(rec, "question"), "", _str(rec, "answer"))
    elif schema == "mawps":
        ans = _str(rec, "ans")
        sample = Sample(_str(rec, "original_text"), "", f"{_str(rec, 'equation')}\nThe answer is {ans}.")
    elif schema == "mbpp":
        tests = rec.get("test_list") or []
        tests = "\n".join(t for t in tests if isinstance(t, str))
        sample = Sample(_str(rec, "text"), f"Your code should pass these tests:\n{tests}" if tests else "",
                        _str(rec, "code").replace("\r\n", "\n"))
    elif schema == "logiqa":
        options = rec.get("options")
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise SkipRecord("missing_field", "'options' must be a list of strings")
        answer = _str(rec, "answer").upper()
        zh = bool(CJK.search(_str(rec, "question")))
        sample = Sample(_str(rec, "question"), _str(rec, "context") + "\n" + "\n".join(options),
                        f"答案是 {answer}。" if zh else f"The answer is {answer}.")
    else:
        raise SkipRecord("unknown_schema", f"schema {schema!r}")
    if not sample.instruction and not sample.input:
        raise SkipRecord("empty_text", "empty prompt")
    if not sample.output:
        raise SkipRecord("empty_text", "empty response")
    return sample


# ---- diversification --------------------------------------------------------------------------------------

# (instruction label, input label) per language; None label = the part is written bare.
_LABELS = {
    "en": [(None, None), ("Instruction", "Input"), ("Question", "Context"), ("Task", "Details"),
           ("Prompt", "Additional information")],
    "zh": [(None, None), ("指令", "输入"), ("问题", "背景"), ("任务", "补充信息")],
}
_SEPARATORS = ["\n\n", "\n", "\n---\n", "\n\n### "]
_SYSTEM = {
    "en": ["You are a helpful assistant.", "You are a careful assistant. Answer accurately and concisely.",
           "Solve the task step by step and give the final answer."],
    "zh": ["你是一个乐于助人的助手。", "请认真、准确地回答问题。"],
}
_SHOT_HEAD = {"en": ["Here are some examples:", "Examples:", "Solved examples:"],
              "zh": ["以下是一些示例：", "示例："]}
_SHOT_TAIL = {"en": ["Now answer the following.", "Your turn:", "Now solve this one:"],
              "zh": ["现在请回答：", "请完成以下任务："]}
_ANSWER = {"en": ["Answer:", "Response:", "Output:"], "zh": ["答案：", "回答："]}


def _case(label: str, style: int) -> str:
    if style == 1:
        return label.upper()
    if style == 2:
        return label.lower()
    return label


def _join_prompt(sample: Sample, rng: random.Random, diversify: bool, lang: str) -> str:
    if not diversify:
        return "\n\n".join(x for x in (sample.instruction, sample.input) if x)
    inst_label, input_label = rng.choice(_LABELS[lang])
    sep = rng.choice(_SEPARATORS) if inst_label else rng.choice(_SEPARATORS[:2])
    style = rng.randrange(3)
    colon = "：" if lang == "zh" else ":"
    inst = sample.instruction
    inp = sample.input
    if inst_label:
        inst = f"{_case(inst_label, style)}{colon}\n{inst}" if sep.startswith("\n\n#") or rng.random() < 0.5 \
            else f"{_case(inst_label, style)}{colon} {inst}"
        if inp:
            inp = f"{_case(input_label, style)}{colon}\n{inp}"
    parts = [x for x in (inst, inp) if x]
    if len(parts) == 2 and rng.random() < 0.25:  # input first, then the instruction
        parts.reverse()
    return sep.join(parts)


class Diversifier:
    """Renders Samples as conversations; keeps a few recent training samples per file for few-shot prompts."""

    def __init__(self, cfg: SftFormatConfig, shots_kept: int = 8, render: ChatRenderer | None = None):
        self.cfg = cfg
        self.render = render or ChatRenderer()  # default: our own template
        self.recent: dict[int, deque] = {}
        self.shots_kept = shots_kept

    def remember(self, file_key: int, sample: Sample) -> None:
        """Offer a training sample as a future few-shot example (never held-out ones: they must stay unseen)."""
        if not sample.messages:
            self.recent.setdefault(file_key, deque(maxlen=self.shots_kept)).append(sample)

    def format(self, sample: Sample, uid: int, file_key: int) -> tuple[str, list[tuple[int, int]]]:
        """Chat text of a sample and the character spans of its assistant turns."""
        cfg = self.cfg
        rng = random.Random((cfg.seed * 1_000_003) ^ uid)
        if sample.messages:
            return self.render(list(sample.messages))
        lang = "zh" if sample.chinese else "en"
        prompt = _join_prompt(sample, rng, cfg.diversify, lang)
        messages = []
        if cfg.diversify and rng.random() < cfg.system_prompt:
            messages.append({"role": "system", "content": rng.choice(_SYSTEM[lang])})
        pool = list(self.recent.get(file_key, ()))
        if cfg.diversify and pool and rng.random() < cfg.few_shot:
            shots = rng.sample(pool, min(len(pool), rng.randint(1, cfg.max_shots)))
            answer = rng.choice(_ANSWER[lang])
            blocks = [f"{_join_prompt(s, rng, False, lang)}\n{answer} {s.output}" for s in shots]
            prompt = (rng.choice(_SHOT_HEAD[lang]) + "\n\n" + "\n\n".join(blocks) + "\n\n"
                      + rng.choice(_SHOT_TAIL[lang]) + "\n\n" + prompt)
        messages.append({"role": "user", "content": prompt})
        messages.append({"role": "assistant", "content": sample.output})
        return self.render(messages)
