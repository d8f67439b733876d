"""The global batch size of each optimizer step, and how it splits into micro-batches.

The batch is counted in sequences (tokens / seq_len). With a linear ramp it grows from ``start`` to ``end``
tokens over ``ramp_steps`` optimizer steps; with a step ramp it is ``start`` until ``ramp_steps`` and ``end``
after (the Xmodel-2 report's 2M → 4M tokens, §2.5); both rounded down to a whole number of micro-batches on
every rank. Where each step's batch starts in the sampler is the train state's
``data_position``, which advances by every step's batch (a skipped non-finite step's too); `prefetch` splits it
into micro-batches rank-major, so the data order does not depend on the number of ranks or accumulation steps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    seq_len: int
    micro_batch: int        # sequences per micro-batch on one rank
    world_size: int
    end_tokens: int         # global batch, tokens, after the ramp
    start_tokens: int | None = None
    ramp_steps: int = 0
    ramp: str = "linear"    # linear: grow step by step; step: start_tokens until ramp_steps, then end_tokens

    @property
    def unit(self) -> int:
        """Sequences in one micro-batch summed over ranks: the granularity of the global batch."""
        return self.micro_batch * self.world_size

    def _round(self, tokens: float) -> int:
        return max(1, int(tokens // self.seq_len) // self.unit) * self.unit

    def sequences_at(self, step: int) -> int:
        """Global batch size (sequences) of optimizer step `step`."""
        if self.start_tokens is None or self.ramp_steps <= 0 or step >= self.ramp_steps:
            return self._round(self.end_tokens)
        if self.ramp == "step":  # Xmodel-2 §2.5: 2M tokens, then 4M
            return self._round(self.start_tokens)
        tokens = self.start_tokens + (self.end_tokens - self.start_tokens) * step / self.ramp_steps
        return self._round(tokens)

    def validate(self) -> None:
        if self.end_tokens < self.seq_len * self.unit:
            raise ValueError(f"batch_tokens: {self.end_tokens} is less than one micro-batch on every rank "
                             f"({self.unit} × {self.seq_len} tokens)")
        if self.end_tokens % (self.seq_len * self.unit):
            raise ValueError(f"batch_tokens: {self.end_tokens} is not a multiple of micro_batch_size × world "
                             f"× seq_len = {self.unit * self.seq_len}")
