"""The language model as a ReAct policy: batched completions with stop strings, greedy by default.

Every prompt is the token ids of its few-shot prefix followed by those of the episode's own text (tokenized
apart, always, so a prompt's tokens never depend on batching or caching). Prompts longer than the model's
context minus ``max_new_tokens`` lose tokens from the left; the episode records how many.

The prefix is shared by every episode of a task, so its key/value cache is computed once and reused: a batch
is laid out as ``prefix | padding | episode text`` with the padding masked, which is the same computation as
the uncached ``padding | prefix | episode text`` up to floating-point order (`prefix_cache=False` runs that).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ...model.modeling_xmodel import CACHE_FIELD, cache_of
from .loop import Request


@dataclass
class GenerationSettings:
    max_new_tokens: int = 100      # ReAct's max_tokens
    temperature: float = 0.0       # 0 = greedy (ReAct decodes at temperature 0)
    top_p: float = 1.0
    seed: int = 0
    prefix_cache: bool = True

    def validate(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be ≥ 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature: must be ≥ 0 (and top_p in (0, 1])")


class StopOnStrings(StoppingCriteria):
    """Per-row stop: a row is finished once its generated text contains one of its stop strings."""

    def __init__(self, tokenizer, stops: list[list[str]], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.start = prompt_width
        longest = max((len(s) for row in stops for s in row), default=1)
        self.window = 4 * longest + 4   # tokens: enough to spell the longest stop string even byte by byte
        self.finished = [False] * len(stops)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        for i, row in enumerate(input_ids):
            if not self.finished[i] and self.stops[i]:
                tail = self.tokenizer.decode(row[self.start:][-self.window:], skip_special_tokens=True)
                self.finished[i] = any(s in tail for s in self.stops[i])
        return torch.tensor(self.finished, device=input_ids.device)


def cut_at_stop(text: str, stops: list[str]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text if cut < 0 else text[:cut]


class LMPolicy:
    def __init__(self, model, tokenizer, settings: GenerationSettings | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings or GenerationSettings()
        self.device = next(model.parameters()).device
        self.context = int(getattr(model.config, "max_position_embeddings", 2048))
        self.max_prompt = self.context - self.settings.max_new_tokens
        if self.max_prompt < 16:
            raise ValueError(f"max_new_tokens: {self.settings.max_new_tokens} leaves no room for a prompt in "
                             f"the model's {self.context}-token context")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            self.pad_id = 0
        self._prefix_ids: dict[str, list[int]] = {}
        self._prefix_kv: dict[str, object] = {}
        torch.manual_seed(self.settings.seed)

    # ------------------------------------------------------------------ tokens
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prefix_ids(self, prefix: str) -> list[int]:
        if prefix not in self._prefix_ids:
            self._prefix_ids[prefix] = self._ids(prefix)
        return self._prefix_ids[prefix]

    def _prefix_cache(self, prefix: str):
        if prefix not in self._prefix_kv:
            ids = torch.tensor([self.prefix_ids(prefix)], device=self.device)
            with torch.inference_mode():
                out = self.model(input_ids=ids, use_cache=True)
            self._prefix_kv[prefix] = cache_of(out)
        return self._prefix_kv[prefix]

    # ------------------------------------------------------------------ generation
    def _generate_kwargs(self, stops, width) -> dict:
        s = self.settings
        kwargs = dict(max_new_tokens=s.max_new_tokens, pad_token_id=self.pad_id,
                      eos_token_id=self.tokenizer.eos_token_id,
                      stopping_criteria=StoppingCriteriaList([StopOnStrings(self.tokenizer, stops, width)]))
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _decode(self, out: torch.Tensor, width: int, stops: list[list[str]]) -> list[str]:
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [cut_at_stop(t, st) for t, st in zip(texts, stops)]

    def _run_plain(self, rows: list[list[int]], stops: list[list[str]]) -> list[str]:
        """Left-padded batch, no cache."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      **self._generate_kwargs(stops, width))
        return self._decode(out, width, stops)

    def _run_cached(self, prefix: str, suffixes: list[list[int]], stops: list[list[str]]) -> list[str]:
        """``prefix | padding | suffix`` rows over a copy of the prefix's cache."""
        p = self.prefix_ids(prefix)
        s_width = max(len(s) for s in suffixes)
        width = len(p) + s_width
        ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(suffixes), width), dtype=torch.long)
        ids[:, :len(p)] = torch.tensor(p)
        mask[:, :len(p)] = 1
        for i, s in enumerate(suffixes):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        cache = copy.deepcopy(self._prefix_cache(prefix))
        cache.batch_repeat_interleave(len(suffixes))
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      **{CACHE_FIELD: cache}, **self._generate_kwargs(stops, width))
        return self._decode(out, width, stops)

    def complete(self, requests: list[Request]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        plain: list[int] = []
        cached: dict[str, list[int]] = {}
        suffix_ids: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            p = self.prefix_ids(req.prefix)
            s = self._ids(req.text)
            if not p and not s:   # nothing to condition on: start from BOS (or padding)
                bos = self.tokenizer.bos_token_id
                s = [bos if bos is not None else self.pad_id]
            suffix_ids[i] = s
            over = len(p) + len(s) - self.max_prompt
            if over > 0:
                req.episode.prompt_tokens_dropped = max(req.episode.prompt_tokens_dropped, over)
                plain.append(i)
            elif self.settings.prefix_cache and p and s:
                cached.setdefault(req.prefix, []).append(i)
            else:
                plain.append(i)
        if plain:
            rows = [(self.prefix_ids(requests[i].prefix) + suffix_ids[i])[-self.max_prompt:] for i in plain]
            for i, text in zip(plain, self._run_plain(rows, [requests[i].stop for i in plain])):
                results[i] = text
        for prefix, idx in cached.items():
            texts = self._run_cached(prefix, [suffix_ids[i] for i in idx], [requests[i].stop for i in idx])
            for i, text in zip(idx, texts):
                results[i] = text
        return [r or "" for r in results]
