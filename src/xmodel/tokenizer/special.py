"""Special tokens and the chat template, shared by the tokenizer trainer and the SFT formatter.

The template is ChatML-like. `render_chat` produces exactly what `tokenizer.apply_chat_template(messages,
tokenize=False)` produces (tested), plus the character spans of the assistant turns, which become the
trained (unmasked) tokens of an SFT document.
"""

from __future__ import annotations

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
UNK = "<|unk|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Order fixes the ids: 0 unk, 1 bos, 2 eos, 3 pad, 4 im_start, 5 im_end.
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD, IM_START, IM_END]
BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
ROLES = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def render_chat(messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Text of a conversation and the (start, end) character spans to train on: each assistant turn's
    content and its closing marker."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in messages:
        head = f"{IM_START}{m['role']}\n"
        body = f"{m['content']}{IM_END}"
        parts += [head, body, "\n"]
        if m["role"] == "assistant":
            spans.append((pos + len(head), pos + len(head) + len(body)))
        pos += len(head) + len(body) + 1
    return "".join(parts), spans
