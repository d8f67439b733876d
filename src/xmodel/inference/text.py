"""Turning a stream of token ids into a stream of text: incremental decoding and stop strings."""

from __future__ import annotations


class IncrementalDetokenizer:
    """Decodes one token at a time, emitting only complete new text.

    Each step decodes a short window that starts a few tokens back (the prompt's last tokens at first), so a
    decoder that strips the leading space of its first token, or byte-fallback tokens that complete a
    character only together, give the right delta; text ending in U+FFFD (an incomplete character) is held.
    Work per token is constant, not proportional to the length so far.
    """

    def __init__(self, tokenizer, prompt_ids: list[int] | None = None, context: int = 6):
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids or [])[-context:]
        self.prefix = 0
        self.read = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held (an incomplete character is emitted as U+FFFD)."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):]


class StopStringFilter:
    """Cuts a text stream at the first stop string, holding back any tail that might begin one."""

    def __init__(self, stops: tuple[str, ...] | list[str] = ()):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was reached); after a stop, the rest is dropped."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[:min(hits)], ""
            return out, True
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), keep, -1):
                if self.pending.endswith(stop[:k]):
                    keep = k
                    break
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
