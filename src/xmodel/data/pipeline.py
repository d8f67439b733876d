"""The data pipeline as datatrove pipeline blocks, and a quiet local executor to run them.

Blocks (each a `datatrove.pipeline.base.PipelineStep`, so the same lists run under datatrove's
`LocalPipelineExecutor` here and its `SlurmPipelineExecutor` / `RayPipelineExecutor` on a cluster):

- `ReadSources`     — reads this task's share of every `InputSource` (jsonl/text/parquet/datasets), SFT records
                      as `Sample`s; applies the held-out rule once per document; counts skipped records.
- `WriteSignatures` — content hash + SimHash per document → the dedup folder.
- `FindPairs`       — near-duplicate pairs within this task's dedup buckets.
- `DecideRemovals`  — one task: exact duplicates + near-duplicate clusters → the uids to drop, and counts.
- `DropRemoved`     — filters the documents dedup decided to drop.
- `FormatSft`       — SFT samples → chat text with prompt diversification; loss-mask spans.
- `TokenizePack`    — tokenises in batches, appends EOS, routes held-out documents, packs seq_len rows into
                      shards written under temporary names and renamed when complete.
- `AssembleManifest` — one task: merges the task reports into the indexes and manifest.json.

The blocks are handed the plan's typed parts as they are (`plan.py`); their per-task counts go through
`manifest.TaskReports`, which also merges them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from ..errors import XmodelError
from ..tokenizer.loading import load_tokenizer
from ..tokenizer.special import ChatRenderer
from .config import DedupConfig, SftFormatConfig
from .dedup import (decide_removals, find_pairs, load_pairs, load_removed, load_signatures, save_pairs,
                    save_removed, save_signatures)
from .heldout import is_heldout
from .ingest import FILE_SHIFT, SkipLog, SkipRecord
from .manifest import SourcePacked, SourceReads, TaskReports, assemble_manifest
from .plan import InputSource, PackSettings, Plan
from .sft import Diversifier
from .shards import ShardWriter
from .simhash import SimHasher, content_hash

SIG_BATCH = 2048
TOKENIZE_BATCH_DOCS = 512
TOKENIZE_BATCH_CHARS = 4_000_000
# The Unigram model memoises pre-token → pieces in a cache of 10,000 entries that stops filling once full; a
# 12 MB mixed corpus has ~180K distinct pre-tokens, and a cache of this size tokenised it 8-33 % faster
# (benchmarks/bench_pack.py, docs/PERFORMANCE.md) for ~30 MB per task process. Same output either way.
TOKENIZER_CACHE_ENTRIES = 200_000


class _Progress:
    """Writes a task's processed-document count to a small file about once a second (for the progress bar)."""

    def __init__(self, work: str, stage: str, rank: int):
        self.path = Path(work) / "progress" / f"{stage}-{rank:05d}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._last = 0.0

    def tick(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last > 1.0:
            self._last = now
            self.flush()

    def flush(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(str(self.count))
        os.replace(tmp, self.path)


class ReadSources(PipelineStep):
    """Reads the inputs of the plan: one datatrove Document per usable record, owned by exactly one task.

    Document.text is the content dedup and the held-out rule look at (an SFT record's fields without any
    template); metadata carries uid, packed source name, content hash, whether the document is held out and,
    for SFT, the Sample.
    """

    name = "xmodel sources"
    type = "📖 - READER"

    def __init__(self, inputs: tuple[InputSource, ...], work: str, stage: str, heldout_fraction: float):
        super().__init__()
        self.inputs, self.work, self.stage, self.heldout_fraction = inputs, work, stage, heldout_fraction

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        progress = _Progress(self.work, self.stage, rank)
        reads: dict[str, SourceReads] = {}
        for inp in self.inputs:
            skips = SkipLog()
            read = 0
            for rec in inp.records(skips, rank=rank, world_size=world_size):
                try:
                    sample, text = inp.document(rec)
                except SkipRecord as e:
                    skips.skip(e.reason, rec.where, e.detail)
                    continue
                hi, lo = content_hash(text)
                meta = {"uid": rec.uid, "source": inp.source, "hi": hi, "lo": lo, "file_key": rec.uid >> FILE_SHIFT,
                        "heldout": is_heldout(hi, self.heldout_fraction)}
                if sample is not None:
                    meta["sample"] = sample
                read += 1
                progress.tick()
                yield Document(text=text, id=str(rec.uid), metadata=meta)
            if read:
                self.stat_update("documents", value=read)
            reads.setdefault(inp.source, SourceReads()).add(SourceReads(read, skips))
        progress.flush()
        TaskReports(Path(self.work)).save_reads(self.stage, rank, reads)


class WriteSignatures(PipelineStep):
    name = "xmodel simhash signatures"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, shingle: int):
        super().__init__()
        self.folder, self.shingle = folder, shingle

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        hasher = SimHasher(self.shingle)
        cols = {k: [] for k in ("uid", "hi", "lo", "sig", "nfeat")}
        batch: list[Document] = []

        def flush():
            sigs, nfeat = hasher.signatures([d.text for d in batch])
            cols["uid"].extend(d.metadata["uid"] for d in batch)
            cols["hi"].extend(d.metadata["hi"] for d in batch)
            cols["lo"].extend(d.metadata["lo"] for d in batch)
            cols["sig"].append(sigs)
            cols["nfeat"].append(nfeat)
            batch.clear()

        for doc in data:
            batch.append(doc)
            if len(batch) >= SIG_BATCH:
                flush()
        if batch:
            flush()
        save_signatures(Path(self.folder), rank, np.array(cols["uid"], np.uint64), np.array(cols["hi"], np.uint64),
                        np.array(cols["lo"], np.uint64),
                        np.concatenate(cols["sig"]) if cols["sig"] else np.zeros(0, np.uint64),
                        np.concatenate(cols["nfeat"]) if cols["nfeat"] else np.zeros(0, np.uint32))
        return
        yield  # a generator that consumes its input and yields nothing


class FindPairs(PipelineStep):
    name = "xmodel near-duplicate pairs"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, dedup: DedupConfig):
        super().__init__()
        self.folder, self.dedup = folder, dedup

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        folder = Path(self.folder)
        pairs = find_pairs(load_signatures(folder), self.dedup, rank, world_size)
        self.stat_update("pairs", value=len(pairs))
        save_pairs(folder, rank, pairs)
        return
        yield


class DecideRemovals(PipelineStep):
    name = "xmodel dedup clusters"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, dedup: DedupConfig, source_names: dict[int, str], work: str):
        super().__init__()
        self.folder, self.dedup, self.source_names, self.work = folder, dedup, source_names, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        folder = Path(self.folder)
        removed, report = decide_removals(load_signatures(folder), load_pairs(folder), self.dedup, self.source_names)
        save_removed(folder, removed)
        TaskReports(Path(self.work)).save_dedup(report)
        return
        yield


class DropRemoved(PipelineStep):
    name = "xmodel drop duplicates"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str | None):
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if not self.folder:  # dedup off
            yield from data
            return
        removed = set(load_removed(Path(self.folder)).tolist())
        for doc in data:
            if doc.metadata["uid"] in removed:
                self.stat_update("dropped")
                continue
            yield doc


class FormatSft(PipelineStep):
    """SFT samples → chat text (Document.text) and the character spans of the assistant turns."""

    name = "xmodel SFT formatting"
    type = "✂️ - FORMAT"

    def __init__(self, sft: SftFormatConfig, tokenizer_dir: str | None = None):
        super().__init__()
        self.sft, self.tokenizer_dir = sft, tokenizer_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        div = Diversifier(self.sft, render=ChatRenderer(self.tokenizer_dir, self.sft.chat_template))
        for doc in data:
            sample = doc.metadata.pop("sample", None)
            if sample is not None:
                doc.text, spans = div.format(sample, doc.metadata["uid"], doc.metadata["file_key"])
                doc.metadata["spans"] = spans
                # Held-out candidates never become few-shot examples inside training prompts.
                if not doc.metadata["heldout"]:
                    div.remember(doc.metadata["file_key"], sample)
            yield doc


class TokenizePack(PipelineStep):
    """Tokenise (batched), append EOS, route held-out documents, and pack into this task's shards."""

    name = "xmodel tokenize + pack"
    type = "🔢 - TOKENIZER"

    def __init__(self, settings: PackSettings, work: str):
        super().__init__()
        self.settings, self.work = settings, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        pack = self.settings
        if pack.single_threaded:  # one task per core: no extra threads inside each task
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        tok = load_tokenizer(pack.tokenizer_dir)
        resize = getattr(tok.model, "_resize_cache", None)  # tokenizers >= 0.21.1
        if resize is not None:
            resize(TOKENIZER_CACHE_ENTRIES)
        writers: dict[tuple[str, str], ShardWriter] = {}
        heldout_tokens: dict[str, int] = {}
        chars: dict[str, int] = {}
        batch: list[Document] = []
        batch_chars = 0
        dtype = np.dtype(pack.dtype)

        def writer(source: str, split: str) -> ShardWriter:
            key = (source, split)
            if key not in writers:
                base = Path(pack.out) / "sources" / source / f"{split}-{rank:05d}"
                writers[key] = ShardWriter(base, pack.seq_len, dtype, source in pack.masked_sources)
            return writers[key]

        def flush():
            plain = [d for d in batch if "spans" not in d.metadata]
            chat = [d for d in batch if "spans" in d.metadata]
            encoded = {}
            # Token lists get their EOS appended before the one conversion to the shard's dtype (this loop is
            # the pack stage's main cost after the tokeniser itself).
            if plain:
                for d, enc in zip(plain, tok.encode_batch_fast([d.text for d in plain], add_special_tokens=False)):
                    ids = enc.ids
                    ids.append(pack.eos_id)
                    encoded[id(d)] = (np.array(ids, dtype=dtype), None)
            if chat:
                for d, enc in zip(chat, tok.encode_batch([d.text for d in chat], add_special_tokens=False)):
                    ids = enc.ids
                    ids.append(pack.eos_id)
                    starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(ids) - 1)
                    mask = np.zeros(len(ids), dtype=bool)
                    mask[-1] = True  # the EOS ends the answer: it is learned
                    for a, b in d.metadata["spans"]:
                        mask[:-1] |= (starts >= a) & (starts < b)
                    encoded[id(d)] = (np.array(ids, dtype=dtype), mask)
            for d in batch:  # in stream order, so the packing is deterministic
                ids, mask = encoded[id(d)]
                source = d.metadata["source"]
                split = "train"
                if d.metadata["heldout"] and heldout_tokens.get(source, 0) + len(ids) <= pack.heldout_tokens_per_task:
                    split = "heldout"
                    heldout_tokens[source] = heldout_tokens.get(source, 0) + len(ids)
                chars[source] = chars.get(source, 0) + len(d.text)
                writer(source, split).add(ids, mask)
                self.stat_update("tokens", value=len(ids))
            batch.clear()

        for doc in data:
            batch.append(doc)
            batch_chars += len(doc.text)
            if len(batch) >= TOKENIZE_BATCH_DOCS or batch_chars >= TOKENIZE_BATCH_CHARS:
                flush()
                batch_chars = 0
        if batch:
            flush()
        packed: dict[str, SourcePacked] = {}
        for (source, split), w in sorted(writers.items()):
            packed.setdefault(source, SourcePacked(chars.get(source, 0))).splits[split] = w.close()
        TaskReports(Path(self.work)).save_packed(rank, packed)
        return
        yield


class AssembleManifest(PipelineStep):
    """One task: merge the task reports into sources/<name>/index.json and manifest.json (written last)."""

    name = "xmodel manifest"
    type = "📝 - WRITER"

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        assemble_manifest(self.plan)
        return
        yield


# ---- running a stage ---------------------------------------------------------------------------------------

def _file_only_task_logger(logging_dir, rank, local_rank=0, node_rank=-1):
    """datatrove's task logger without its terminal handler: a task's log goes to its log file only."""
    from loguru import logger

    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    logger.add(logfile, level="DEBUG", colorize=False,
               format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}")
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def _warnings_only_logger():
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{level}: {message}")


@contextmanager
def _quiet_datatrove():
    """Keep datatrove's per-task INFO logs out of the terminal (our progress bar is there); they still go to
    the task log files. Worker processes are forked, so they inherit the patched functions."""
    import datatrove.executor.base as dt_base
    import datatrove.utils.logging as dt_logging

    saved = (dt_base.add_task_logger, dt_logging.setup_default_logger)
    dt_base.add_task_logger = _file_only_task_logger
    dt_logging.setup_default_logger = _warnings_only_logger
    _warnings_only_logger()
    try:
        yield
    finally:
        dt_base.add_task_logger, dt_logging.setup_default_logger = saved
        dt_logging.setup_default_logger()


def run_stage(stage: str, pipeline: list, tasks: int, workers: int, work: Path, total: int | None = None,
              progress: bool = True) -> None:
    """Run one pipeline stage with datatrove's local executor; completed tasks of an earlier run are skipped."""
    logging_dir = work / "logs" / stage
    # fork: workers start at once with everything imported (forkserver re-imports torch & co. per worker)
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=max(1, min(workers, tasks)),
                                     logging_dir=str(logging_dir), skip_completed=True, start_method="fork")
    stop = threading.Event()
    bar_thread = None
    if progress:
        bar_thread = threading.Thread(target=_progress_bar, args=(stage, work, total, tasks, logging_dir, stop),
                                      daemon=True)
        bar_thread.start()
    try:
        with _quiet_datatrove():
            executor.run()
    except XmodelError:
        raise
    except Exception as e:  # a failing task: its traceback is in the task log
        raise XmodelError(f"{stage} stage failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''});"
                          f" task logs in {logging_dir / 'logs'}") from None
    finally:
        stop.set()
        if bar_thread is not None:
            bar_thread.join()


def _progress_bar(stage: str, work: Path, total: int | None, tasks: int, logging_dir: Path,
                  stop: threading.Event) -> None:
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    bar = tqdm(total=total, desc=f"{stage:>10}", unit="doc", dynamic_ncols=True, leave=True,
               mininterval=0.5 if tty else 10.0)
    folder = work / "progress"

    def update():
        done = 0
        for f in folder.glob(f"{stage}-*"):
            if not f.name.endswith(".tmp"):
                try:
                    done += int(f.read_text() or 0)
                except (OSError, ValueError):
                    pass
        finished = len(list((logging_dir / "completions").glob("*"))) if (logging_dir / "completions").is_dir() else 0
        bar.set_postfix_str(f"tasks {finished}/{tasks}", refresh=False)
        bar.update(done - bar.n)

    while not stop.wait(0.5):
        update()
    update()
    bar.close()
