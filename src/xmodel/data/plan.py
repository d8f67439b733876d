"""The typed contract between `prepare` and the pipeline's blocks: what is resolved and checked up front.

`prepare.plan_preparation` builds a `Plan`; the datatrove blocks are handed its parts as they are — the
`InputSource`s to read, the `PackSettings` of the packing block, the config sections they use — frozen, so they
pickle unchanged to any executor (local, Slurm, Ray) and no block rebuilds a config from a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from .config import DataConfig, SftFileConfig, SourceConfig
from .ingest import Record, SkipLog, check_source, display_path, iter_records, resolve_files, text_of
from .sft import Sample, to_sample

WORK = ".work"  # the work folder inside the output directory: task reports, dedup files, logs


@dataclass(frozen=True)
class InputSource:
    """One group of files that feeds one packed source: a pretraining corpus, or one SFT file of a category."""

    index: int                   # position in the plan; every record's uid starts with it (ingest.SOURCE_SHIFT)
    source: str                  # the packed source: the corpus name, or sft.<category>
    kind: Literal["pretrain", "sft"]
    files: tuple[str, ...]       # resolved paths
    labels: tuple[str, ...]      # the same files as messages name them (relative to the data root)
    format: str
    max_docs: int | None = None
    split: str = "train"         # the split of a datasets dict
    text_field: str = "text"     # pretraining: the field that holds the text
    text_split: str = "file"     # pretraining plain text: one document per file, paragraph or line
    schema: str = "auto"         # SFT: the record shape

    @classmethod
    def pretrain(cls, index: int, cfg: SourceConfig, root: Path) -> InputSource:
        """A configured corpus, its paths resolved under the data root (a pattern matching nothing is an error)."""
        files = resolve_files(cfg.paths, root, cfg.format, f"source {cfg.name}")
        return cls(index, cfg.name, "pretrain", tuple(map(str, files)), tuple(display_path(f, root) for f in files),
                   cfg.format, cfg.max_docs, cfg.split, text_field=cfg.text_field, text_split=cfg.text_split)

    @classmethod
    def sft(cls, index: int, category: str, position: int, cfg: SftFileConfig, root: Path) -> InputSource:
        """The `position`-th SFT file of a category."""
        files = resolve_files([cfg.path], root, cfg.format, f"decay.sft.{category}[{position}]")
        return cls(index, f"sft.{category}", "sft", tuple(map(str, files)),
                   tuple(display_path(f, root) for f in files), cfg.format, cfg.max_docs, cfg.split,
                   schema=cfg.schema)

    @property
    def columns(self) -> list[str] | None:
        """The columns a parquet reader needs (SFT records need all of theirs)."""
        return [self.text_field] if self.kind == "pretrain" else None

    def records(self, skips: SkipLog, *, rank: int = 0, world_size: int = 1) -> Iterator[Record]:
        """The records task `rank` of `world_size` owns, in file order (unusable lines counted in `skips`)."""
        return iter_records([Path(f) for f in self.files], self.format, self.index, skips,
                            text_split=self.text_split, columns=self.columns, max_docs=self.max_docs,
                            split=self.split, rank=rank, world_size=world_size, labels=list(self.labels))

    def document(self, record: Record) -> tuple[Sample | None, str]:
        """(the SFT `Sample` or None, the text dedup and the held-out rule look at); SkipRecord when unusable."""
        if self.kind == "sft":
            sample = to_sample(record.payload, self.schema)
            return sample, sample.canonical
        return None, text_of(record, self.text_field)

    def check(self) -> None:
        """Read the first records of every file: a wrong format, field name or an empty file is a one-line
        XmodelError now, before anything is written."""
        check_source(self.source, [Path(f) for f in self.files], self.format, self.document,
                     labels=list(self.labels), text_split=self.text_split, columns=self.columns, split=self.split)


@dataclass(frozen=True)
class PackSettings:
    """What the tokenize-and-pack block needs (`Plan.pack_settings` derives it)."""

    tokenizer_dir: str
    out: str
    seq_len: int
    dtype: str                           # the shards' token dtype (uint16 or uint32)
    eos_id: int
    heldout_tokens_per_task: int         # data.heldout.max_tokens shared out evenly: each task routes its own
    masked_sources: frozenset[str]       # sources whose shards carry a loss mask (SFT, with sft.mask_prompt)
    single_threaded: bool                # several task processes at once: one tokenizer thread each


@dataclass(frozen=True)
class Plan:
    """Everything the stages need, resolved and checked up front (see `prepare.plan_preparation`)."""

    cfg: DataConfig
    root: Path
    tokenizer_dir: Path
    out: Path
    inputs: tuple[InputSource, ...]
    tokenizer_hash: str
    vocab_size: int
    dtype: str
    eos_id: int                          # the document separator's id (appended after every document)
    fingerprint: str
    separator: str = ""                  # that token's text

    @property
    def work(self) -> Path:
        return self.out / WORK

    @property
    def dedup_dir(self) -> Path:
        return self.work / "dedup"

    def source_names(self) -> list[str]:
        """The packed sources, in plan order (a source with several SFT files once)."""
        return list(dict.fromkeys(inp.source for inp in self.inputs))

    def kind_of(self, source: str) -> str:
        return next(inp.kind for inp in self.inputs if inp.source == source)

    def pack_settings(self) -> PackSettings:
        cfg = self.cfg
        masked = {inp.source for inp in self.inputs if inp.kind == "sft"} if cfg.sft.mask_prompt else set()
        return PackSettings(str(self.tokenizer_dir), str(self.out), cfg.seq_len, self.dtype, self.eos_id,
                            heldout_tokens_per_task=-(-cfg.heldout.max_tokens // cfg.tasks),
                            masked_sources=frozenset(masked), single_threaded=min(cfg.workers, cfg.tasks) > 1)
