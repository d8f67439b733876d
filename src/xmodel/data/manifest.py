"""The manifest of a prepared directory, its per-source indexes, and the per-task reports they are merged from.

    manifest.json                     # tokenizer hash, seq_len, dtype, fingerprint, per-source counts, config
    sources/<name>/index.json         # one source's shards per split (what `shards.PackedDataset` opens)
    .work/tasks/<kind>-<rank>.json    # one task's counts, saved by a pipeline block through `TaskReports`

A split's statistics (sequences, tokens, documents, tokens in and dropped, shards) are computed once, by
`SplitStats.merge` from the shard entries the packing tasks report; index.json and manifest.json hold that same
record, and readers get it back through `Manifest.split`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import XmodelError
from .atomic import write_json_atomic
from .ingest import SkipLog
from .plan import Plan

MANIFEST = "manifest.json"
INDEX = "index.json"
FORMAT = "xmodel-packed-v1"
SPLITS = ("train", "heldout")
TASKS = "tasks"


# ---- split statistics -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitStats:
    """One source's split (train or heldout) over every task."""

    sequences: int = 0
    tokens: int = 0            # sequences × seq_len: what a training run reads
    documents: int = 0
    tokens_in: int = 0         # document tokens (EOS included) before packing
    tokens_dropped: int = 0    # the partial last row of each task's stream
    shards: tuple[dict, ...] = ()

    @classmethod
    def merge(cls, entries: list[dict], seq_len: int) -> SplitStats:
        """From the shard entries (`ShardWriter.close()`) of every task in task order; a shard without sequences
        is counted but not listed (there is no file to open)."""
        entries = [e for e in entries if e["sequences"] > 0 or e["documents"] > 0]
        sequences = sum(e["sequences"] for e in entries)
        return cls(sequences, sequences * seq_len, sum(e["documents"] for e in entries),
                   sum(e["tokens_in"] for e in entries), sum(e["tokens_dropped"] for e in entries),
                   tuple(e for e in entries if e["sequences"] > 0))

    @classmethod
    def from_dict(cls, d: dict) -> SplitStats:
        return cls(**{**d, "shards": tuple(d["shards"])})

    def to_dict(self) -> dict:
        return {**asdict(self), "shards": list(self.shards)}


# ---- per-task reports ---------------------------------------------------------------------------------------

@dataclass
class SourceReads:
    """Documents read from one source and the records skipped (by reason, with the first locations)."""

    read: int = 0
    skips: SkipLog = field(default_factory=SkipLog)

    def add(self, other: SourceReads) -> None:
        self.read += other.read
        self.skips.merge(other.skips)

    def to_dict(self) -> dict:
        return {"read": self.read, "skips": self.skips.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> SourceReads:
        return cls(d["read"], SkipLog.from_dict(d["skips"]))


@dataclass
class SourcePacked:
    """What one packing task wrote for one source: characters tokenised and a shard entry per split."""

    chars: int = 0
    splits: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"chars": self.chars, **self.splits}

    @classmethod
    def from_dict(cls, d: dict) -> SourcePacked:
        return cls(d.get("chars", 0), {s: d[s] for s in SPLITS if s in d})


@dataclass(frozen=True)
class TaskReports:
    """The reports of one preparation's tasks, one file per task and kind under ``<work>/tasks`` (so no two tasks
    write the same file). The pipeline's blocks save them, `assemble_manifest` merges them; only this class
    knows their names."""

    work: Path

    def _path(self, kind: str, rank: int) -> Path:
        return Path(self.work) / TASKS / f"{kind}-{rank:05d}.json"

    def _save(self, kind: str, rank: int, obj) -> None:
        path = self._path(kind, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, obj)

    def _load(self, kind: str) -> list:
        """Every task's report of one kind, in rank order."""
        name = re.compile(rf"{re.escape(kind)}-\d+\.json")
        folder = Path(self.work) / TASKS
        files = sorted(f for f in folder.glob(f"{kind}-*.json") if name.fullmatch(f.name)) if folder.is_dir() else []
        return [json.loads(f.read_text(encoding="utf-8")) for f in files]

    def save_reads(self, stage: str, rank: int, reads: dict[str, SourceReads]) -> None:
        self._save(f"{stage}-read", rank, {name: r.to_dict() for name, r in reads.items()})

    def reads(self, stage: str) -> dict[str, SourceReads]:
        """Per source, the documents read and skips of a reading stage, summed over its tasks."""
        merged: dict[str, SourceReads] = {}
        for task in self._load(f"{stage}-read"):
            for name, entry in task.items():
                merged.setdefault(name, SourceReads()).add(SourceReads.from_dict(entry))
        return merged

    def save_packed(self, rank: int, packed: dict[str, SourcePacked]) -> None:
        self._save("pack", rank, {name: p.to_dict() for name, p in packed.items()})

    def packed(self) -> list[dict[str, SourcePacked]]:
        """Each packing task's report, in rank order (the order of the shards in the index)."""
        return [{name: SourcePacked.from_dict(d) for name, d in task.items()} for task in self._load("pack")]

    def save_dedup(self, report: dict) -> None:
        self._save("dedup", 0, report)

    def dedup(self) -> dict:
        """The clusters stage's counts ({} when dedup is off)."""
        found = self._load("dedup")
        return found[0] if found else {}


# ---- the manifest -------------------------------------------------------------------------------------------

@dataclass
class Manifest:
    """What `prepare_data` wrote: where, with which tokenizer, and the per-source counts."""

    path: Path
    seq_len: int
    tokenizer_hash: str
    vocab_size: int
    dtype: str
    sources: dict[str, dict]
    dedup: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    fingerprint: str = ""

    def require(self, source: str) -> None:
        if source not in self.sources:
            raise XmodelError(f"{self.path}: no prepared source {source!r} (have: {', '.join(self.sources)})")

    def split(self, source: str, split: str = "train") -> SplitStats:
        self.require(source)
        return SplitStats.from_dict(self.sources[source][split])

    def to_dict(self) -> dict:
        return {"format": FORMAT, "seq_len": self.seq_len, "tokenizer_hash": self.tokenizer_hash,
                "vocab_size": self.vocab_size, "dtype": self.dtype, "fingerprint": self.fingerprint,
                "sources": self.sources, "dedup": self.dedup, "config": self.config}


def load_manifest(path: str | os.PathLike | Manifest) -> Manifest:
    """The manifest of a prepared directory (one-line error when there is none)."""
    if isinstance(path, Manifest):
        return path
    p = Path(path)
    f = p / MANIFEST
    if not f.is_file():
        raise XmodelError(f"{p}: not a prepared data directory (no {MANIFEST}); run `xmodel data prepare`")
    d = json.loads(f.read_text(encoding="utf-8"))
    if d.get("format") != FORMAT:
        raise XmodelError(f"{f}: unknown format {d.get('format')!r} (expected {FORMAT})")
    return Manifest(p, d["seq_len"], d["tokenizer_hash"], d["vocab_size"], d["dtype"], d["sources"],
                    d.get("dedup", {}), d.get("config", {}), d.get("fingerprint", ""))


def load_index(folder: str | os.PathLike) -> dict:
    """A prepared source's index.json (one-line error when `folder` is not a prepared source)."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise XmodelError(f"{folder}: not a prepared source (no {INDEX}); run `xmodel data prepare`")
    return json.loads(path.read_text(encoding="utf-8"))


def assemble_manifest(plan: Plan) -> Manifest:
    """Merge the task reports into sources/<name>/index.json and manifest.json (written last: a finished manifest
    is what the next run checks first)."""
    cfg = plan.cfg
    reports = TaskReports(plan.work)
    reads = reports.reads("pack")
    packed = reports.packed()
    dedup = reports.dedup()
    masked = plan.pack_settings().masked_sources
    configured = {s.name: s for s in cfg.sources}
    sources = {}
    for name in plan.source_names():
        kind = plan.kind_of(name)
        splits = {split: SplitStats.merge([task[name].splits[split] for task in packed
                                           if name in task and split in task[name].splits], cfg.seq_len).to_dict()
                  for split in SPLITS}
        read = reads.get(name, SourceReads())
        src = configured.get(name)
        sources[name] = {
            "kind": kind, "category": name.removeprefix("sft.") if kind == "sft" else None,
            "language": src.language if src else None, "weight": src.weight if src else None,
            "inputs": [label for inp in plan.inputs if inp.source == name for label in inp.labels],
            "documents_read": read.read, "skipped": read.skips.to_dict(),
            "exact_removed": dedup.get("exact_removed", {}).get(name, 0),
            "near_removed": dedup.get("near_removed", {}).get(name, 0),
            "chars": sum(task[name].chars for task in packed if name in task),
            "has_mask": name in masked,
            **splits,
        }
        index = {"name": name, "seq_len": cfg.seq_len, "dtype": plan.dtype, "tokenizer_hash": plan.tokenizer_hash,
                 "vocab_size": plan.vocab_size, "has_mask": name in masked, **splits}
        folder = plan.out / "sources" / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / INDEX, index)
    manifest = Manifest(plan.out, cfg.seq_len, plan.tokenizer_hash, plan.vocab_size, plan.dtype, sources, dedup,
                        asdict(cfg), plan.fingerprint)
    write_json_atomic(plan.out / MANIFEST, manifest.to_dict())
    return manifest
