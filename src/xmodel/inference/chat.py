"""A multi-turn chat over a `Generator`: history, chat template, context-window trimming, streamed replies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

from ..errors import XmodelError
from .engine import Generator
from .runtime import chat_prompt_ids
from .sampling import SamplingParams


class ChatSession:
    """Keeps the conversation; each `reply` renders it with the chat template and streams the answer."""

    def __init__(self, generator: Generator, params: SamplingParams, system: str | None = None):
        self.generator = generator
        self.params = params.validate()
        self.system = system
        self.turns: list[dict] = []
        self.last_finish_reason: str | None = None

    @property
    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def reset(self) -> None:
        self.turns = []

    def prompt_ids(self) -> list[int]:
        """The rendered conversation; the oldest turns are dropped until it and the reply fit the context."""
        budget = self.generator.max_context - self.params.max_new_tokens
        while True:
            ids = chat_prompt_ids(self.generator.tokenizer, self.messages)
            if len(ids) <= budget:
                return ids
            if len(self.turns) <= 1:
                raise XmodelError(f"message too long: {len(ids)} prompt tokens + max_new_tokens "
                                  f"{self.params.max_new_tokens} exceed the context of {self.generator.max_context}")
            self.turns = self.turns[2:] if len(self.turns) > 2 else self.turns[1:]  # a user+assistant pair

    def reply(self, user_text: str, cancel: threading.Event | None = None) -> Iterator[str]:
        """Stream the assistant's answer to `user_text`; the answer joins the history when it ends."""
        self.turns.append({"role": "user", "content": user_text})
        try:
            ids = self.prompt_ids()
        except XmodelError:
            self.turns.pop()
            raise
        # A seeded session is reproducible as a whole, without repeating one sample in every turn.
        seed = None if self.params.seed is None else self.params.seed + len(self.turns)
        params = replace(self.params, seed=seed)
        answer = []
        self.last_finish_reason = None
        try:
            for outputs in self.generator.stream([ids], [params], cancel):
                for out in outputs:
                    if out.text:
                        answer.append(out.text)
                        yield out.text
                    if out.finish_reason:
                        self.last_finish_reason = out.finish_reason
        finally:
            self.turns.append({"role": "assistant", "content": "".join(answer)})
