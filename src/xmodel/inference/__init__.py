"""Inference: batched streaming generation, sampling, the chat REPL and the OpenAI-compatible server."""

from .engine import Generator, StaticKVCache
from .sampling import SamplingParams

__all__ = ["Generator", "SamplingParams", "StaticKVCache"]
