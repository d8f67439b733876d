"""Batched, streaming text generation with a preallocated KV cache.

`Generator.stream` runs the decode loop itself instead of going through transformers' `generate`: the prompts
are left-padded into one batch, their K/V go into buffers allocated once for the whole request
(`StaticKVCache`), and each step is one forward pass of one token per sequence plus the sampler. Every
sequence has its own sampling settings, token budget and stop strings; a sequence that finishes stops
producing text while the rest continue. `threading.Event`s cancel sequences (a client that went away).

The model's own forward pass is used unchanged (`XmodelForCausalLM`): the cache only has to offer the two
methods the attention layers call, `update` and `get_seq_length`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..errors import XmodelError
from .sampling import Sampler, SamplingParams
from .text import IncrementalDetokenizer, StopStringFilter


class StaticKVCache:
    """K/V buffers of shape (batch, kv_heads, max_len, head_dim) per layer, filled in place.

    `update` writes the new positions and returns views of everything cached so far (no concatenation, no
    reallocation per step, unlike a cache that grows by `torch.cat`).
    """

    def __init__(self, config, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        shape = (batch, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.max_len = max_len
        self.length = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        end = self.length + key.shape[2]
        if end > self.max_len:
            raise XmodelError(f"KV cache full: {end} positions > {self.max_len}")
        self.keys[layer_idx][:, :, self.length:end] = key
        self.values[layer_idx][:, :, self.length:end] = value
        if layer_idx == len(self.keys) - 1:  # the last layer closes the step
            self.length = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]


@dataclass
class StepOutput:
    """What one sequence produced in one step."""

    index: int                  # row in the batch
    token_id: int | None        # None when only pending text was flushed at the end
    text: str                   # new text (may be empty while bytes of a character are pending)
    finish_reason: str | None   # "stop" (EOS / stop string), "length", "cancelled", or None while running


@dataclass
class Usage:
    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


class Generator:
    """Streams completions of a batch of prompts from a causal LM and its tokenizer."""

    def __init__(self, model, tokenizer, stop_token_ids: set[int] | None = None, max_batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.max_context = model.config.max_position_embeddings
        self.max_batch_size = max_batch_size
        self.stop_token_ids = set(stop_token_ids or ())
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    @torch.inference_mode()
    def stream(self, prompts: list[list[int]], params: list[SamplingParams],
               cancel: threading.Event | list[threading.Event | None] | None = None,
               usage: Usage | None = None) -> Iterator[list[StepOutput]]:
        """Yield, after each decode step, the new output of every sequence still running.

        `cancel` is one event for the whole batch or one per sequence: a set event ends its sequences with
        finish_reason "cancelled" at the next step; the others go on.
        """
        if not prompts or len(prompts) != len(params):
            raise XmodelError("stream: need one SamplingParams per prompt")
        if len(prompts) > self.max_batch_size:
            raise XmodelError(f"batch of {len(prompts)} prompts exceeds max_batch_size={self.max_batch_size}")
        if any(len(p) == 0 for p in prompts):
            raise XmodelError("prompt: empty (no tokens)")
        batch, width = len(prompts), max(len(p) for p in prompts)
        budget = max(p.max_new_tokens for p in params)
        if width + budget > self.max_context:
            raise XmodelError(f"prompt of {width} tokens + max_tokens {budget} exceeds the model's context of "
                              f"{self.max_context} tokens")
        row_cancels = cancel if isinstance(cancel, list) else [cancel] * len(prompts)
        usage = usage if usage is not None else Usage()
        usage.prompt_tokens = [len(p) for p in prompts]
        usage.completion_tokens = [0] * batch

        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        padded = bool((mask == 0).any())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = StaticKVCache(self.model.config, batch, width + budget, self.dtype, self.device)
        sampler = Sampler(params, self.model.config.vocab_size, self.device)
        sampler.observe(ids, mask)
        detok = [IncrementalDetokenizer(self.tokenizer, prompt) for prompt in prompts]
        stops = [StopStringFilter(p.stop) for p in params]
        finished = [None] * batch

        t0 = time.perf_counter()
        logits = self.model(ids, attention_mask=mask if padded else None, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        usage.prefill_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        next_pos = positions[:, -1:] + 1
        for step in range(budget):
            tokens = sampler(logits)
            token_list = tokens.tolist()
            outputs = []
            for row, token in enumerate(token_list):
                if finished[row]:
                    continue
                if row_cancels[row] is not None and row_cancels[row].is_set():
                    finished[row] = "cancelled"
                    outputs.append(StepOutput(row, None, "", "cancelled"))
                    continue
                usage.completion_tokens[row] += 1
                if token in self.stop_token_ids:
                    finished[row] = "stop"
                    outputs.append(StepOutput(row, token, self._rest(detok[row], stops[row]), "stop"))
                    continue
                text, hit = stops[row].push(detok[row].push(token))
                if hit:
                    finished[row] = "stop"
                elif usage.completion_tokens[row] >= params[row].max_new_tokens:
                    finished[row] = "length"
                    text += self._rest(detok[row], stops[row])
                outputs.append(StepOutput(row, token, text, finished[row]))
            yield outputs
            if all(finished):
                break
            sampler.observe(tokens[:, None])
            if padded:
                mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            logits = self.model(tokens[:, None], attention_mask=mask if padded else None, position_ids=next_pos,
                                past_key_values=cache, use_cache=True).logits[:, -1]
            next_pos = next_pos + 1
        usage.decode_seconds = time.perf_counter() - t0

    @staticmethod
    def _rest(detok: IncrementalDetokenizer, stops: StopStringFilter) -> str:
        """Text still held by the detokenizer and the stop filter when a sequence ends without a stop string."""
        text, hit = stops.push(detok.flush())
        return text if hit else text + stops.flush()

    def complete(self, prompts: list[list[int]], params: list[SamplingParams],
                 cancel: threading.Event | None = None) -> tuple[list[str], list[str], Usage]:
        """Run `stream` to the end: (texts, finish reasons, usage)."""
        texts, reasons, usage = [""] * len(prompts), ["length"] * len(prompts), Usage()
        for outputs in self.stream(prompts, params, cancel, usage):
            for out in outputs:
                texts[out.index] += out.text
                if out.finish_reason:
                    reasons[out.index] = out.finish_reason
        return texts, reasons, usage
