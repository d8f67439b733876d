"""Batched, streaming text generation with a preallocated KV cache.

`Generator.stream` runs the decode loop itself instead of going through transformers' `generate`: the prompts
are left-padded into one batch, their K/V go into buffers allocated once for the whole request
(`StaticKVCache`), and each step is one forward pass of one token per sequence plus the sampler. Every
sequence has its own sampling settings, token budget and stop strings; a sequence that finishes stops
producing text while the rest continue. `threading.Event`s cancel sequences (a client that went away).

The model's own forward pass is used unchanged (`XmodelForCausalLM`): the cache only has to offer the two
methods the attention layers call, `update` and `get_seq_length`.

With ``compile=True`` the decode steps go through `CompiledDecodeStep` (torch.compile with weight freezing and
max-autotune GEMMs). At batch 1 a decode step reads every weight once, and on CPU PyTorch's eager bf16
matrix-vector kernels use well under half the memory bandwidth; inductor's GEMM kernels on frozen (prepacked)
weights and one fused graph per step (no per-op dispatch) are what make it faster — see docs/PERFORMANCE.md.
"""

from __future__ import annotations

import sys
import threading
import time
import types
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
        # Set by the compiled decode step: a (1,) tensor, the one position this step writes. The attention then
        # runs over the whole buffer under the caller's mask, so every step has the same shapes.
        self.slot: torch.Tensor | None = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.slot is not None:
            self.keys[layer_idx].index_copy_(2, self.slot, key)
            self.values[layer_idx].index_copy_(2, self.slot, value)
            return self.keys[layer_idx], self.values[layer_idx]
        end = self.length + key.shape[2]
        if end > self.max_len:
            raise XmodelError(f"KV cache full: {end} positions > {self.max_len}")
        self.keys[layer_idx][:, :, self.length:end] = key
        self.values[layer_idx][:, :, self.length:end] = value
        if layer_idx == len(self.keys) - 1:  # the last layer closes the step
            self.length = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]


class CompiledDecodeStep:
    """One decode step of a causal LM through `torch.compile`: one token per row, logits of the next.

    Every call with the same (batch, window) shape reuses one compiled graph; the engine keeps the number of
    shapes small by padding the batch to a power of two and rounding the cache window up to a multiple of
    `WINDOW_STEP`. The weights are frozen into the graph (inductor's `freezing`: constant-folded and prepacked
    for its GEMM kernels), so the model must not change after the first call. Compiling takes one to two
    minutes per shape on a CPU for the `tiny` preset; inductor's on-disk caches shorten later starts.
    """

    WINDOW_STEP = 256
    # No guards on the model's modules and parameters: checking them took ~0.6 ms of a ~10 ms step, and the
    # frozen graph could not follow a changed model anyway. The model is told apart by the code object below.
    OPTIONS = {"max_autotune": True, "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}

    def __init__(self, model):
        self.model = model = model.eval()
        self.shapes: set[tuple[int, int]] = set()
        # Each (batch, window) shape is one more compiled variant of the same function; dynamo's default limit
        # of 8 variants would silently fall back to eager for a long-running server.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)

        def decode(tokens, positions, key_ok, cache):
            return model(tokens, attention_mask=key_ok[:, None, None, :], position_ids=positions,
                         past_key_values=cache, use_cache=True).logits[:, -1].float()  # the sampler's dtype

        # Dynamo keeps compiled graphs per code object. A copy of the code per instance keeps each model's graphs
        # apart: without guards on the model, a second Generator would otherwise run the first one's weights.
        decode = types.FunctionType(decode.__code__.replace(), decode.__globals__, decode.__name__,
                                    decode.__defaults__, decode.__closure__)
        self.compiled = torch.compile(decode, fullgraph=True, dynamic=False, options=self.OPTIONS)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, key_ok: torch.Tensor,
                 cache: StaticKVCache, slot: int) -> torch.Tensor:
        """fp32 logits (B, V) after `tokens` (B, 1) at `positions` (B, 1), written to cache position `slot`;
        `key_ok` (B, window) says which cache positions each row may attend to (this one included)."""
        if tuple(key_ok.shape) not in self.shapes:
            self.shapes.add(tuple(key_ok.shape))
            print(f"compiling the decode step for batch {key_ok.shape[0]}, window {key_ok.shape[1]} (once per shape; "
                  "a minute or two on a CPU)", file=sys.stderr, flush=True)
        cache.slot = torch.tensor([slot], device=tokens.device)
        try:
            # Inductor reads `freezing` from its global config when it compiles, not from torch.compile's
            # options (measured: passed as an option, the linears stayed unfrozen `aten::mm`s, 3x slower).
            with torch._inductor.config.patch(freezing=True):
                return self.compiled(tokens, positions, key_ok, cache)
        finally:
            cache.slot = None

    @classmethod
    def bucket(cls, batch: int, length: int) -> tuple[int, int]:
        """(padded batch, cache window) for `batch` sequences of up to `length` positions."""
        return 1 << (batch - 1).bit_length(), -(-length // cls.WINDOW_STEP) * cls.WINDOW_STEP


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

    def __init__(self, model, tokenizer, stop_token_ids: set[int] | None = None, max_batch_size: int = 64,
                 compile: bool = False):
        self.model = model.eval()
        self.decode_step = CompiledDecodeStep(self.model) if compile else None
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
        cache_len = width + budget
        if self.decode_step is not None:
            # Pad to the compiled shapes: extra rows repeat the first prompt greedily and are never reported.
            rows, cache_len = self.decode_step.bucket(batch, cache_len)
            prompts = prompts + [prompts[0]] * (rows - batch)
            params = params + [SamplingParams(max_new_tokens=budget)] * (rows - batch)
            row_cancels = row_cancels + [None] * (rows - batch)
            batch_real, batch = batch, rows
        else:
            batch_real = batch

        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        padded = bool((mask == 0).any())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = StaticKVCache(self.model.config, batch, cache_len, self.dtype, self.device)
        sampler = Sampler(params, self.model.config.vocab_size, self.device)
        sampler.observe(ids, mask)
        detok = [IncrementalDetokenizer(self.tokenizer, prompt) for prompt in prompts]
        stops = [StopStringFilter(p.stop) for p in params]
        finished = [None] * batch_real + ["padding"] * (batch - batch_real)
        if self.decode_step is not None:
            key_ok = torch.zeros(batch, cache_len, dtype=torch.bool, device=self.device)
            key_ok[:, :width] = mask.bool()

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
            if self.decode_step is not None:
                key_ok[:, width + step] = True
                logits = self.decode_step(tokens[:, None], next_pos, key_ok, cache, width + step)
            else:
                if padded:
                    mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
                logits = self.model(tokens[:, None], attention_mask=mask if padded else None,
                                    position_ids=next_pos, past_key_values=cache, use_cache=True).logits[:, -1]
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
