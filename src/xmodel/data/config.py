"""The `data` config section: sources, tokenizer, dedup, held-out split, packing and the two stage mixtures.

    data:
      seq_len: 512
      sources:                       # pretraining corpora; `weight` is the stable-stage token share
        - {name: en, paths: [corpora/en/*.jsonl.gz], language: en, weight: 0.5}
        - {name: code, paths: [corpora/code/code_corpus.jsonl.gz], language: code, weight: 0.5}
      decay:                         # decay stage: pretraining sources + SFT data by category
        sft_share: 0.64
        categories: {math: 0.2, code: 0.2, logic: 0.2, knowledge: 0.2, commonsense: 0.2}
        sft:
          math: [{path: sft/math/gsm8k_train.jsonl}]

Paths are relative to the data root (`xmodel.data.root.data_root`) unless absolute; globs are allowed.
A ready-made example is `xmodel/configs/data/quickstart.yaml` (`--config quickstart`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..tokenizer.config import TokenizerConfig
from .weights import decay_shares, normalise_weights

SFT_CATEGORIES = ("math", "code", "logic", "knowledge", "commonsense")
FORMATS = ("auto", "jsonl", "text", "parquet", "hf_disk", "hf_hub")
SFT_SCHEMAS = ("auto", "messages", "alpaca", "qa", "mawps", "mbpp", "logiqa", "seed_tasks")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "configs" / "data"


@dataclass
class SourceConfig:
    """One pretraining corpus.

    name: unique; names the packed output (``sources/<name>/``) and the mixture entry.
    paths: files, globs or (format hf_disk) dataset directories, relative to the data root or absolute;
        for hf_hub, dataset names ("owner/name", needs a network).
    format: auto (by extension: .jsonl/.json/.jsonl.gz/.jsonl.zst → jsonl, .txt/.md(.gz) → text,
        .parquet → parquet, a directory saved by `datasets` → hf_disk), or one of those explicitly.
    text_field: the field holding the text (jsonl, parquet, datasets).
    text_split: for plain text: one document per file, per blank-line-separated paragraph, or per line.
    language: a tag for statistics (tokenizer fertility is reported per language: en, zh, code, ...).
    weight: token share in the stable-stage mixture (normalised over sources; 0 = prepared but not sampled).
    max_docs: read at most this many records (in file order); None = all.
    split: the split to read for hf_hub / hf_disk dataset dicts.
    """

    name: str
    paths: list[str]
    format: Literal["auto", "jsonl", "text", "parquet", "hf_disk", "hf_hub"] = "auto"
    text_field: str = "text"
    text_split: Literal["file", "paragraph", "line"] = "file"
    language: str | None = None
    weight: float = 1.0
    max_docs: int | None = None
    split: str = "train"

    def validate(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith(("sft.", ".")):
            raise ValueError(f"name: {self.name!r} must be non-empty, without '/', not starting with 'sft.'")
        if not self.paths:
            raise ValueError("paths: at least one file or glob is needed")
        if self.weight < 0:
            raise ValueError(f"weight: must be >= 0, got {self.weight}")
        if self.max_docs is not None and self.max_docs <= 0:
            raise ValueError(f"max_docs: must be positive, got {self.max_docs}")


@dataclass
class SftFileConfig:
    """One SFT file of a category. schema: the record shape (auto = recognised from the field names)."""

    path: str
    schema: Literal["auto", "messages", "alpaca", "qa", "mawps", "mbpp", "logiqa", "seed_tasks"] = "auto"
    format: Literal["auto", "jsonl", "parquet", "hf_disk", "hf_hub"] = "auto"
    max_docs: int | None = None
    split: str = "train"


@dataclass
class SftFormatConfig:
    """How instruction records become training text (chat template of the tokenizer).

    diversify: rule-based prompt diversification (instruction templates, separators, casing, few-shot forms),
        chosen per record from a seeded hash, so a rerun produces the same text.
    few_shot: fraction of records that get 1..max_shots solved examples of the same file in their prompt.
    system_prompt: fraction of records that get a system turn.
    mask_prompt: train only on the assistant turns (prompt tokens get label IGNORE_INDEX, see `batches`).
    chat_template: "auto" renders conversations in the tokenizer's own chat template when it has one (an
        imported model's format), "xmodel" always in ours.
    """

    diversify: bool = True
    few_shot: float = 0.15
    max_shots: int = 3
    system_prompt: float = 0.2
    mask_prompt: bool = True
    seed: int = 0
    chat_template: Literal["auto", "xmodel"] = "auto"

    def validate(self) -> None:
        for name in ("few_shot", "system_prompt"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.max_shots < 1:
            raise ValueError(f"max_shots: must be >= 1, got {self.max_shots}")


@dataclass
class DecayConfig:
    """The decay-stage mixture: (1 - sft_share) pretraining + sft_share SFT data split over the five categories.

    pretrain_weights: source name → weight inside the pretraining part; None = the stable-stage weights.
    categories: category → weight inside the SFT part (math, code, logic, knowledge, commonsense;
        chain-of-thought data belongs to logic, as in the Xmodel-2 report).
    sft: category → SFT files. Each category is packed as one source named ``sft.<category>``.
    """

    sft_share: float = 0.64
    pretrain_weights: dict[str, float] | None = None
    categories: dict[str, float] = field(default_factory=lambda: {c: 0.2 for c in SFT_CATEGORIES})
    sft: dict[str, list[SftFileConfig]] = field(default_factory=dict)

    def validate(self) -> None:
        if not 0 <= self.sft_share <= 1:
            raise ValueError(f"sft_share: must be in [0, 1], got {self.sft_share}")
        for name in list(self.categories) + list(self.sft):
            if name not in SFT_CATEGORIES:
                raise ValueError(f"categories: unknown category {name!r} (known: {', '.join(SFT_CATEGORIES)})")
        for name, w in self.categories.items():
            if w < 0:
                raise ValueError(f"categories.{name}: weight must be >= 0, got {w}")
        for name, w in (self.pretrain_weights or {}).items():
            if w < 0:
                raise ValueError(f"pretrain_weights.{name}: weight must be >= 0, got {w}")


@dataclass
class DedupConfig:
    """Exact (content hash) and near-duplicate (64-bit SimHash) removal, across all sources.

    threshold: Hamming distance at or below which two documents are near-duplicates (documents with at least
        `short_tokens` words; a CJK character counts as a word).
    short_threshold: the distance used when either document is shorter than that (short, templated records
        such as SFT questions share most of their words, so they need a stricter bound).
    shingle: words per feature (word n-grams).
    bucket_size: the Xmodel-2 report's "bucket size of 1 million", in one of two readings (`bucket_reading`):
        "documents" — buckets of that many documents, near-duplicates searched within a bucket, so memory and
        time stay linear in the corpus; "signature" — that many hash buckets, keyed by a 20-bit band of the
        signature, documents sharing a key compared (classic SimHash tables).
    rounds: passes with a different bucket assignment each, so duplicates that land in different buckets can
        still meet: "documents" — round 0 buckets in corpus order, later rounds after a seeded shuffle;
        "signature" — round r uses the band at bit 20·r (3 rounds find every pair within distance 2).
    blocks: how many blocks the 64 bits are cut into for the banded index (None = chosen for the threshold).
    """

    exact: bool = True
    near: bool = True
    threshold: int = 7
    short_threshold: int = 3
    short_tokens: int = 100
    shingle: int = 2
    bucket_size: int = 1_000_000
    rounds: int = 1
    blocks: int | None = None
    bucket_reading: Literal["documents", "signature"] = "documents"

    def validate(self) -> None:
        if not 0 <= self.short_threshold <= self.threshold <= 16:
            raise ValueError(f"threshold: need 0 <= short_threshold <= threshold <= 16, got "
                             f"{self.short_threshold}, {self.threshold}")
        if self.shingle < 1:
            raise ValueError(f"shingle: must be >= 1, got {self.shingle}")
        if self.bucket_size < 2:
            raise ValueError(f"bucket_size: must be >= 2, got {self.bucket_size}")
        if self.rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {self.rounds}")
        if self.blocks is not None and not self.threshold < self.blocks <= 64:
            raise ValueError(f"blocks: must be in (threshold, 64], got {self.blocks}")


@dataclass
class HeldoutConfig:
    """Documents kept out of training for eval loss: chosen by content hash, at most max_tokens per source."""

    fraction: float = 0.01
    max_tokens: int = 1_000_000

    def validate(self) -> None:
        if not 0 <= self.fraction < 1:
            raise ValueError(f"fraction: must be in [0, 1), got {self.fraction}")
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens: must be >= 0, got {self.max_tokens}")


@dataclass
class DataConfig:
    """Everything `xmodel tokenizer train` and `xmodel data prepare` need, and the mixtures the sampler uses.

    seq_len: tokens per packed training sequence.
    tasks: how many pieces the work is cut into (the output has one shard per task and source, so changing it
        changes the files; the content is deterministic for a given value).
    workers: processes running tasks at once (does not change the output).
    document_separator: the token appended after every document (None: detected from the tokenizer, a base
        model's end-of-text rather than an instruct template's end-of-turn; see `tokenizer.loading`).
    """

    seq_len: int = 4096
    tasks: int = 4
    workers: int = 2
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    sources: list[SourceConfig] = field(default_factory=list)
    decay: DecayConfig = field(default_factory=DecayConfig)
    sft: SftFormatConfig = field(default_factory=SftFormatConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    document_separator: str | None = None

    def validate(self) -> None:
        if self.seq_len < 8:
            raise ValueError(f"seq_len: must be >= 8, got {self.seq_len}")
        if self.tasks < 1 or self.workers < 1:
            raise ValueError(f"tasks: tasks and workers must be >= 1, got {self.tasks}, {self.workers}")
        names = [s.name for s in self.sources]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"sources: duplicate source name {name!r}")
        for name in (self.decay.pretrain_weights or {}):
            if name not in names:
                raise ValueError(f"decay.pretrain_weights: {name!r} is not a source ({', '.join(names)})")
        for name in (self.tokenizer.sources or {}):
            if name not in names:
                raise ValueError(f"tokenizer.sources: {name!r} is not a source ({', '.join(names)})")

    # ---- derived views ----------------------------------------------------------------------------
    def sft_source_names(self) -> list[str]:
        """Packed names of the SFT categories that have files, in the canonical category order."""
        return [f"sft.{c}" for c in SFT_CATEGORIES if self.decay.sft.get(c)]

    def stage_weights(self, stage: str) -> dict[str, float]:
        """Normalised sequence (= token) shares of each packed source in a stage ("stable" or "decay")."""
        pretrain = {s.name: s.weight for s in self.sources}
        if stage == "stable":
            return normalise_weights(pretrain, "stable weights (sources[].weight)")
        if stage != "decay":
            raise ValueError(f"stage: must be 'stable' or 'decay', got {stage!r}")
        decay = self.decay
        missing = [c for c, w in decay.categories.items() if w > 0 and not decay.sft.get(c)]
        if decay.sft_share > 0 and missing:
            raise ValueError(f"decay.categories: {', '.join(missing)} has weight but no files under decay.sft")
        return decay_shares(decay.sft_share, decay.pretrain_weights or pretrain, decay.categories)


def resolve_config_path(name_or_path: str | None) -> str | None:
    """A YAML path as given, or the packaged config of that name (``quickstart`` → configs/data/quickstart.yaml)."""
    if name_or_path is None:
        return None
    p = Path(name_or_path)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return name_or_path
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    return str(builtin) if builtin.is_file() else name_or_path


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
