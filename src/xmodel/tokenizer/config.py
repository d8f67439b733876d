"""The `data.tokenizer` config section: which tokenizer to use, or how to train one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TokenizerConfig:
    """Settings of `xmodel tokenizer train` (and the path a run's tokenizer is read from).

    path: an existing tokenizer directory (absolute, or relative to the working directory); when set,
        `xmodel data prepare` uses it and training is not needed.
    vocab_size: total vocabulary including the 256 byte-fallback pieces and the special tokens
        (65,280 for the Xmodel-2 presets, 32,000 for Xmodel-LM).
    model: "unigram" (the reports' choice) or "bpe" (the comparison baseline of `xmodel tokenizer stats`).
    sample_chars: characters drawn from the sources to train on (a uniform sample of documents per source).
    sources: source name → share of the sample; None = the pretraining sources by their stable-stage weight.
    character_coverage: share of character occurrences in the sample whose characters get their own piece
        (SentencePiece's default 0.9995); rarer characters are spelled with byte pieces.
    max_piece_length, shrinking_factor, n_sub_iterations: the Unigram trainer's own knobs.
    """

    path: str | None = None
    vocab_size: int = 65280
    model: Literal["unigram", "bpe"] = "unigram"
    sample_chars: int = 20_000_000
    sources: dict[str, float] | None = None
    character_coverage: float = 0.9995
    max_piece_length: int = 16
    shrinking_factor: float = 0.75
    n_sub_iterations: int = 2

    def validate(self) -> None:
        if self.vocab_size < 512:
            raise ValueError(f"vocab_size: {self.vocab_size} is too small (the byte pieces alone take 256)")
        if self.vocab_size > 2**32:
            raise ValueError(f"vocab_size: {self.vocab_size} does not fit uint32 token ids")
        if self.sample_chars < 1000:
            raise ValueError(f"sample_chars: {self.sample_chars} is too small to train on")
        if not 0 < self.character_coverage <= 1:
            raise ValueError(f"character_coverage: must be in (0, 1], got {self.character_coverage}")
        if not 0 < self.shrinking_factor < 1:
            raise ValueError(f"shrinking_factor: must be in (0, 1), got {self.shrinking_factor}")
        for name, w in (self.sources or {}).items():
            if w < 0:
                raise ValueError(f"sources.{name}: weight must be >= 0, got {w}")
