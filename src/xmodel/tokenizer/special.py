"""Special tokens and the chat template, shared by the tokenizer trainer and the SFT formatter.

The template is ChatML-like. `render_chat` produces exactly what `tokenizer.apply_chat_template(messages,
tokenize=False)` produces (tested), plus the character spans of the assistant turns, which become the
trained (unmasked) tokens of an SFT document. `ChatRenderer` renders with another model's own template (an
imported model's SFT data must look like its chat format) and finds the same spans.
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


class ChatRenderer:
    """Conversations → (text, assistant spans) in a tokenizer's own chat template, or in ours.

    With another template the spans are found by rendering the conversation up to each assistant turn: the
    text before it (with the generation prompt) and through it; that needs a template whose renderings of a
    conversation's prefixes are prefixes of its rendering, which `check` verifies up front.
    """

    def __init__(self, tokenizer_dir: str | None = None, mode: str = "auto"):
        self.tokenizer = None
        if mode == "auto" and tokenizer_dir is not None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer_dir)
            template = getattr(tok, "chat_template", None)
            if isinstance(template, str) and template != CHAT_TEMPLATE:
                self.tokenizer = tok

    @property
    def own_template(self) -> bool:
        return self.tokenizer is not None

    def _apply(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def __call__(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        if self.tokenizer is None:
            return render_chat(messages)
        text = self._apply(messages)
        spans = []
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before, through = self._apply(messages[:k], generation_prompt=True), self._apply(messages[:k + 1])
            if not (through.startswith(before) and text.startswith(through)):
                raise ValueError("the chat template does not render a conversation's turns in order")
            spans.append((len(before), len(through.rstrip())))
        return text, spans

    def check(self, where: str) -> None:
        """A one-line error now, rather than in a worker, when the template cannot be used for SFT data."""
        from ..errors import XmodelError

        sample = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                  {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"},
                  {"role": "assistant", "content": "A2"}]
        try:
            text, spans = self(sample)
        except Exception as e:  # a template may raise anything (Jinja errors, "system role not supported")
            raise XmodelError(f"{where}: its chat template cannot render SFT data ({str(e).splitlines()[0]}); "
                              f"set data.sft.chat_template: xmodel (or data.sft.system_prompt: 0)") from None
        answers = [m["content"] for m in sample if m["role"] == "assistant"]
        if len(spans) != len(answers) or not all(text[a:b].lstrip().startswith(c) for (a, b), c in zip(spans, answers)):
            raise XmodelError(f"{where}: its chat template's assistant turns could not be located; set "
                              f"data.sft.chat_template: xmodel")
