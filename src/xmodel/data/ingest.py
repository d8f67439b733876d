"""Reading records from jsonl / jsonl.gz, plain text, parquet and Hugging Face `datasets`.

Every record carries a stable integer id (`uid`: source index, file index, record index in the file) and a
``file:line`` location. A bad record (invalid UTF-8, malformed JSON, a missing or non-text field, an empty
text) is skipped and counted in a `SkipLog` with its location — never silently, and never by stopping halfway.
A source that yields nothing usable is a one-line `XmodelError` before any output is written
(`check_source`).
"""

from __future__ import annotations

import glob
import gzip
import heapq
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import XmodelError
from .root import resolve_path

# uid layout: 8 bits source, 20 bits file, 36 bits record within the file. Sorting by uid = config order.
SOURCE_SHIFT, FILE_SHIFT = 56, 36
MAX_FILES, MAX_RECORDS = 1 << 20, 1 << 36
EXAMPLES_KEPT = 5


class SkipRecord(Exception):
    """Raised by a converter for a record that cannot be used: `reason` is a SkipLog key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


@dataclass
class SkipLog:
    """Skipped records by reason, with the first few locations (``file:line: reason (detail)``)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(f"{where}: {reason.replace('_', ' ')}" + (f" ({detail})" if detail else ""))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "SkipLog | dict") -> None:
        other = other if isinstance(other, SkipLog) else SkipLog.from_dict(other)
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.examples.extend(other.examples[: max(0, EXAMPLES_KEPT - len(self.examples))])

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, d: dict) -> "SkipLog":
        return cls(dict(d.get("counts", {})), list(d.get("examples", [])))

    def summary(self) -> str:
        if not self.counts:
            return "none"
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(self.counts.items()))


@dataclass(frozen=True)
class Record:
    uid: int
    where: str      # file:line (or file:row)
    payload: Any    # dict for jsonl / parquet / datasets rows, str for plain text


# ---- files -----------------------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() \
                or (path / "state.json").is_file():
            return "hf_disk"
        raise XmodelError(f"{path}: a directory, but not one saved by datasets.save_to_disk")
    for suffix in (".gz",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".txt", ".md", ".text")):
        return "text"
    if name.endswith(".parquet"):
        return "parquet"
    raise XmodelError(f"{path}: cannot tell the format from the name; set format: jsonl|text|parquet|hf_disk")


def resolve_files(patterns: list[str], root: Path, fmt: str, what: str) -> list[Path]:
    """Expand globs under the data root, in sorted order; a pattern matching nothing is an error."""
    if fmt == "hf_hub":
        return [Path(p) for p in patterns]
    out: list[Path] = []
    for pattern in patterns:
        full = resolve_path(pattern, root)
        if glob.has_magic(str(full)):
            matches = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
            matches = [m for m in matches if m.is_file() or fmt == "hf_disk"]
        else:
            matches = [full] if full.exists() else []
        if not matches:
            raise XmodelError(f"{what}: {pattern} matches no file under {root}" if not Path(pattern).is_absolute()
                              else f"{what}: {pattern}: no such file")
        out.extend(m for m in matches if m not in out)
    if len(out) > MAX_FILES:
        raise XmodelError(f"{what}: {len(out)} files; at most {MAX_FILES} per source")
    return out


def _open_binary(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _decode(raw: bytes, where: str, skips: SkipLog) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        skips.skip("invalid_utf8", where, f"byte {e.start}")
        return None


# ---- per-format record readers ----------------------------------------------------------------------------
# Each yields (index_in_file, where, payload_or_None); None = skipped (already counted). `wanted(index, size)`
# says whether this task owns the record (size: its raw bytes where known), so a task parses only its own share.

def _read_jsonl(path: Path, wanted, skips: SkipLog, label: str):
    index = 0
    try:
        with _open_binary(path) as f:
            for line_no, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                i, index = index, index + 1
                if not wanted(i, len(raw)):
                    continue
                where = f"{label}:{line_no}"
                text = _decode(raw, where, skips)
                if text is None:
                    yield i, where, None
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    skips.skip("malformed_json", where, e.msg)
                    yield i, where, None
                    continue
                if not isinstance(obj, dict):
                    skips.skip("malformed_json", where, f"a JSON {type(obj).__name__}, not an object")
                    yield i, where, None
                    continue
                yield i, where, obj
    except (OSError, EOFError) as e:  # truncated gzip, unreadable file: counted, the rest of the source goes on
        skips.skip("unreadable_file", label, str(e).splitlines()[0] if str(e) else type(e).__name__)


def _read_text(path: Path, split: str, wanted, skips: SkipLog, label: str):
    try:
        with _open_binary(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        skips.skip("unreadable_file", label, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    if split == "file":
        if not wanted(0, len(data)):
            return
        try:
            yield 0, f"{label}:1", data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            skips.skip("invalid_utf8", f"{label}:{line}", f"byte {e.start}")
            yield 0, label, None
        return
    index, block, block_line = 0, [], 1
    lines = data.split(b"\n")
    for line_no, raw in enumerate(lines + [b""], 1):
        boundary = split == "line" or not raw.strip()
        if split == "paragraph" and raw.strip():
            if not block:
                block_line = line_no
            block.append(raw)
        if split == "line" and raw.strip():
            block, block_line = [raw], line_no
        if boundary and block:
            i, index = index, index + 1
            if wanted(i, sum(len(b) + 1 for b in block)):
                where = f"{label}:{block_line}"
                text = _decode(b"\n".join(block), where, skips)
                yield i, where, text
            block = []


def _read_parquet(path: Path, columns: list[str] | None, wanted, skips: SkipLog, label: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise XmodelError(f"{label}: reading parquet needs pyarrow (pip install 'xmodel[hf]')") from None

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a broken file
        skips.skip("unreadable_file", label, str(e).splitlines()[0])
        return
    missing = [c for c in (columns or []) if c not in pf.schema_arrow.names]
    if missing:
        raise XmodelError(f"{label}: no column {missing[0]!r} (columns: {', '.join(pf.schema_arrow.names)})")
    index = 0
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        for row in batch.to_pylist():
            i, index = index, index + 1
            if wanted(i):
                yield i, f"{label}:row {i + 1}", row


def _read_hf(spec: str, fmt: str, split: str, wanted, label: str):
    try:
        import datasets
    except ImportError:
        raise XmodelError(f"{label}: format {fmt} needs the `datasets` package (pip install 'xmodel[hf]')") from None
    if fmt == "hf_disk":
        ds = datasets.load_from_disk(spec)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise XmodelError(f"{label}: no split {split!r} (splits: {', '.join(ds)})")
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(spec, split=split, streaming=True)
        except Exception as e:  # no network, unknown name: one line
            raise XmodelError(f"{label}: cannot load from the hub ({str(e).splitlines()[0]})") from None
    for i, row in enumerate(ds):
        if wanted(i):
            yield i, f"{label}:row {i + 1}", row


def iter_records(files: list[Path], fmt: str, source_index: int, skips: SkipLog, *, text_split: str = "file",
                 columns: list[str] | None = None, max_docs: int | None = None, split: str = "train",
                 rank: int = 0, world_size: int = 1, labels: list[str] | None = None) -> Iterator[Record]:
    """The records of one source that task `rank` of `world_size` owns, in file order.

    With at least two files per task (and no max_docs) tasks take whole files; otherwise records are dealt out
    one by one, each to the task with the fewest bytes so far (`_Dealer`), so tasks finish together even when
    document lengths vary a lot. Either way each record belongs to exactly one task and the split is
    deterministic: every task reads the same sizes in the same order and deals the same way.
    """
    by_file = max_docs is None and len(files) >= 2 * world_size
    seen = 0  # records in earlier files (the global ordinal of max_docs)
    dealer = _Dealer(world_size)
    for file_index, path in enumerate(files):
        if by_file and file_index % world_size != rank:
            continue
        label = labels[file_index] if labels else str(path)
        base = (source_index << SOURCE_SHIFT) | (file_index << FILE_SHIFT)
        counted = [0]

        def wanted(i: int, size: int = 1, first=seen) -> bool:
            if max_docs is not None and first + i >= max_docs:
                raise _Stop
            if i >= MAX_RECORDS:
                raise XmodelError(f"{label}: more than {MAX_RECORDS} records in one file")
            counted[0] = i + 1
            return by_file or dealer.deal(size) == rank

        kind = detect_format(path) if fmt == "auto" else fmt
        if kind == "jsonl":
            reader = _read_jsonl(path, wanted, skips, label)
        elif kind == "text":
            reader = _read_text(path, text_split, wanted, skips, label)
        elif kind == "parquet":
            reader = _read_parquet(path, columns, wanted, skips, label)
        elif kind in ("hf_disk", "hf_hub"):
            reader = _read_hf(str(path), kind, split, wanted, label)
        else:
            raise XmodelError(f"{label}: unknown format {kind!r}")
        try:
            for i, where, payload in reader:
                if payload is not None:
                    yield Record(base | i, where, payload)
        except _Stop:
            return
        if counted[0] == 0 and kind in ("jsonl", "text") and (by_file or rank == 0) and _is_empty(path):
            skips.skip("empty_file", label)
        seen += counted[0]


class _Stop(Exception):
    pass


class _Dealer:
    """Deals records to `tasks` tasks: each goes to the task with the least weight so far (lowest rank on a
    tie). With equal weights this is round-robin; with byte sizes it balances the tokeniser's work."""

    def __init__(self, tasks: int):
        self.heap = [(0, r) for r in range(tasks)]

    def deal(self, weight: int) -> int:
        load, rank = self.heap[0]
        heapq.heapreplace(self.heap, (load + max(1, weight), rank))
        return rank


def _is_empty(path: Path) -> bool:
    try:
        with _open_binary(path) as f:
            return not f.read(1 << 16).strip()
    except (OSError, EOFError):
        return False


# ---- text extraction and the up-front check ------------------------------------------------------------

def text_of(record: Record, text_field: str) -> str:
    """The document text of a pretraining record; raises SkipRecord for a missing, non-text or empty field."""
    payload = record.payload
    if isinstance(payload, str):
        text = payload
    else:
        if text_field not in payload:
            raise SkipRecord("missing_field", f"no field {text_field!r}; fields: {', '.join(list(payload)[:8])}")
        text = payload[text_field]
        if not isinstance(text, str):
            raise SkipRecord("not_text", f"{text_field!r} is a {type(text).__name__}")
    if not text.strip():
        raise SkipRecord("empty_text")
    return text


def check_source(name: str, files: list[Path], fmt: str, convert: Callable[[Record], Any], *,
                 labels: list[str] | None = None, text_split: str = "file", columns: list[str] | None = None,
                 split: str = "train", probe: int = 200) -> None:
    """Read the first `probe` records of every file; a file with none usable is a one-line XmodelError.

    Catches a wrong field name, a wrong format or an empty file before any output is written. A file
    that is empty while others have data only counts as a skip (prepare reports it).
    """
    usable_files = 0
    problems = []
    for file_index, path in enumerate(files):
        skips = SkipLog()
        label = labels[file_index] if labels else str(path)
        good = bad = 0
        records = iter_records([path], fmt, 0, skips, text_split=text_split, columns=columns, max_docs=probe,
                               split=split, labels=[label])
        for record in records:
            try:
                convert(record)
                good += 1
            except SkipRecord as e:
                bad += 1
                skips.skip(e.reason, record.where, e.detail)
        if good:
            usable_files += 1
            continue
        if skips.counts.get("empty_file") and not bad:
            problems.append(f"{label}: empty file")
        elif skips.examples:
            problems.append(f"no usable record in the first {probe} of {label} ({skips.summary()}; first: "
                            f"{skips.examples[0]})")
        else:
            problems.append(f"{label}: no records")
    if not usable_files:
        raise XmodelError(f"source {name}: {problems[0]}")


def display_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
