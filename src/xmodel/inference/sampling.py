"""Next-token choice: repetition penalty, temperature, top-k, top-p, with per-sequence settings in a batch.

The rules are those of transformers' logits processors (so `xmodel chat` and `generate` agree): the
repetition penalty divides positive and multiplies negative logits of every token already in the sequence
(prompt included); temperature 0 is greedy decoding; top-k keeps the k largest logits; top-p keeps the
smallest set of most likely tokens whose probability reaches p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import XmodelError


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0                    # 0 = no top-k filter
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()        # strings that end the text (not included in it)
    seed: int | None = None

    def validate(self) -> "SamplingParams":
        """Raise `XmodelError` naming the first bad value (messages match the CLI flags and API fields)."""
        if self.max_new_tokens < 1:
            raise XmodelError(f"max_tokens: must be ≥ 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= 100:
            raise XmodelError(f"temperature: must be in [0, 100], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise XmodelError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise XmodelError(f"top_k: must be ≥ 0, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise XmodelError(f"repetition_penalty: must be > 0, got {self.repetition_penalty}")
        if any(not s for s in self.stop):
            raise XmodelError("stop: empty stop strings are not allowed")
        return self


class Sampler:
    """Chooses next tokens for a batch whose rows each have their own `SamplingParams`."""

    def __init__(self, params: list[SamplingParams], vocab_size: int, device: torch.device):
        self.params = params
        col = lambda values, dtype: torch.tensor(values, dtype=dtype, device=device)[:, None]  # noqa: E731
        self.temperature = col([p.temperature for p in params], torch.float32)
        self.top_p = col([p.top_p for p in params], torch.float32)
        self.top_k = [p.top_k for p in params]
        self.penalty = col([p.repetition_penalty for p in params], torch.float32)
        self.greedy = torch.tensor([p.temperature == 0 for p in params], device=device)
        # Tokens seen so far per row (for the repetition penalty), kept incrementally.
        self.seen = torch.zeros(len(params), vocab_size, dtype=torch.bool, device=device)
        self.generators = []
        for p in params:
            g = torch.Generator(device=device)
            g.manual_seed(p.seed if p.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
            self.generators.append(g)

    def observe(self, token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Record tokens (B, T) as seen; `mask` (B, T) marks the real ones (left padding is not a token)."""
        if mask is not None:
            token_ids = torch.where(mask.bool(), token_ids, token_ids[:, -1:])
        self.seen.scatter_(1, token_ids, True)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) logits → (B,) next tokens."""
        logits = logits.float()
        if bool((self.penalty != 1).any()):
            penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
            logits = torch.where(self.seen, penalised, logits)
        choice = logits.argmax(-1)
        if bool(self.greedy.all()):
            return choice
        scaled = logits / torch.where(self.temperature > 0, self.temperature, 1.0)
        for row, k in enumerate(self.top_k):
            if 0 < k < scaled.shape[-1]:
                kth = torch.topk(scaled[row], k).values[-1]
                scaled[row] = scaled[row].masked_fill(scaled[row] < kth, float("-inf"))
        if bool((self.top_p < 1).any()):
            sorted_logits, order = scaled.sort(-1, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            # Drop a token when the tokens before it already reach top_p (the first one always stays).
            drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= self.top_p
            drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
            scaled = scaled.masked_fill(drop, float("-inf"))
        probs = scaled.softmax(-1)
        for row in range(len(self.params)):
            if not bool(self.greedy[row]):
                choice[row] = torch.multinomial(probs[row], 1, generator=self.generators[row])[0]
        return choice
