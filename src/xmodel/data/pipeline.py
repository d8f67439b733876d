"""The data pipeline as datatrove pipeline blocks, and a quiet local executor to run them.

Blocks (each a `datatrove.pipeline.base.PipelineStep`, so the same lists run under datatrove's
`LocalPipelineExecutor` here and its `SlurmPipelineExecutor` / `RayPipelineExecutor` on a cluster):

- `ReadSources`     — reads this task's share of every source (jsonl/text/parquet/datasets), SFT records as
                      `Sample`s; counts skipped records with file:line.
- `WriteSignatures` — content hash + SimHash per document → ``sig-<rank>.npz``.
- `FindPairs`       — near-duplicate pairs within this task's dedup buckets → ``pairs-<rank>.npy``.
- `DecideRemovals`  — one task: exact duplicates + near-duplicate clusters → ``removed.npy``, ``dedup.json``.
- `DropRemoved`     — filters the documents dedup decided to drop.
- `FormatSft`       — SFT samples → chat text with prompt diversification; loss-mask spans.
- `TokenizePack`    — tokenises in batches, appends EOS, splits off held-out documents, packs seq_len rows
                      into shards written under temporary names and renamed when complete.
- `AssembleManifest` — one task: per-source index files and manifest.json.

Every block writes its per-task counts as JSON under the work folder; `prepare.py` merges them.
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
from .ingest import FILE_SHIFT, SkipLog, SkipRecord, iter_records, text_of
from .shards import ShardWriter, write_json_atomic
from .simhash import SimHasher, content_hash, is_heldout_hash

SIG_BATCH = 2048
TOKENIZE_BATCH_DOCS = 512
TOKENIZE_BATCH_CHARS = 4_000_000
# The Unigram model memoises pre-token → pieces in a cache of 10,000 entries that stops filling once full; a
# 12 MB mixed corpus has ~180K distinct pre-tokens, and a cache of this size tokenised it 8-33 % faster
# (benchmarks/bench_pack.py, docs/PERFORMANCE.md) for ~30 MB per task process. Same output either way.
TOKENIZER_CACHE_ENTRIES = 200_000


def _write_task_json(work: str, name: str, obj) -> None:
    path = Path(work) / "tasks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, obj)


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

    Document.text is the content dedup and the held-out split look at (an SFT record's fields without any
    template); metadata carries uid, packed source name, kind, content hash and, for SFT, the Sample.
    """

    name = "xmodel sources"
    type = "📖 - READER"

    def __init__(self, inputs: list[dict], work: str, stage: str):
        super().__init__()
        self.inputs, self.work, self.stage = inputs, work, stage

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from .sft import to_sample

        progress = _Progress(self.work, self.stage, rank)
        report: dict[str, dict] = {}
        for inp in self.inputs:
            skips = SkipLog()
            read = 0
            records = iter_records([Path(f) for f in inp["files"]], inp["format"], inp["index"], skips,
                                   text_split=inp.get("text_split", "file"), columns=inp.get("columns"),
                                   max_docs=inp.get("max_docs"), split=inp.get("split", "train"), rank=rank,
                                   world_size=world_size, labels=inp["labels"])
            for rec in records:
                try:
                    if inp["kind"] == "sft":
                        sample = to_sample(rec.payload, inp["schema"])
                        text = sample.canonical
                    else:
                        sample, text = None, text_of(rec, inp["text_field"])
                except SkipRecord as e:
                    skips.skip(e.reason, rec.where, e.detail)
                    continue
                hi, lo = content_hash(text)
                meta = {"uid": rec.uid, "source": inp["source"], "kind": inp["kind"], "hi": hi, "lo": lo,
                        "input": inp["index"], "file_key": rec.uid >> FILE_SHIFT}
                if sample is not None:
                    meta["sample"] = sample
                read += 1
                progress.tick()
                yield Document(text=text, id=str(rec.uid), metadata=meta)
            if read:
                self.stat_update("documents", value=read)
            entry = report.setdefault(inp["source"], {"read": 0, "skips": SkipLog().to_dict()})
            entry["read"] += read
            merged = SkipLog.from_dict(entry["skips"])
            merged.merge(skips)
            entry["skips"] = merged.to_dict()
        progress.flush()
        _write_task_json(self.work, f"{self.stage}-read-{rank:05d}.json", report)


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
        from .dedup import save_signatures

        Path(self.folder).mkdir(parents=True, exist_ok=True)
        save_signatures(Path(self.folder) / f"sig-{rank:05d}.npz", np.array(cols["uid"], np.uint64),
                        np.array(cols["hi"], np.uint64), np.array(cols["lo"], np.uint64),
                        np.concatenate(cols["sig"]) if cols["sig"] else np.zeros(0, np.uint64),
                        np.concatenate(cols["nfeat"]) if cols["nfeat"] else np.zeros(0, np.uint32))
        return
        yield  # a generator that consumes its input and yields nothing


class FindPairs(PipelineStep):
    name = "xmodel near-duplicate pairs"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, dedup: dict):
        super().__init__()
        self.folder, self.dedup = folder, dedup

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from ..config.core import build_section
        from .config import DedupConfig
        from .dedup import find_pairs, load_signatures

        dcfg = build_section(DedupConfig, self.dedup)
        pairs = find_pairs(load_signatures(Path(self.folder)), dcfg, rank, world_size)
        self.stat_update("pairs", value=len(pairs))
        out = Path(self.folder) / f"pairs-{rank:05d}.npy"
        tmp = out.with_name(out.name + ".tmp.npy")
        np.save(tmp, pairs)
        os.replace(tmp, out)
        return
        yield


class DecideRemovals(PipelineStep):
    name = "xmodel dedup clusters"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, dedup: dict, source_names: dict[int, str]):
        super().__init__()
        self.folder, self.dedup, self.source_names = folder, dedup, source_names

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from ..config.core import build_section
        from .config import DedupConfig
        from .dedup import decide_removals, load_signatures

        dcfg = build_section(DedupConfig, self.dedup)
        folder = Path(self.folder)
        sigs = load_signatures(folder)
        parts = [np.load(f) for f in sorted(folder.glob("pairs-*.npy"))]
        pairs = np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)
        removed, report = decide_removals(sigs, pairs, dcfg, {int(k): v for k, v in self.source_names.items()})
        tmp = folder / "removed.tmp.npy"
        np.save(tmp, removed)
        os.replace(tmp, folder / "removed.npy")
        write_json_atomic(folder / "dedup.json", report)
        return
        yield


class DropRemoved(PipelineStep):
    name = "xmodel drop duplicates"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str | None):
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from .dedup import load_removed

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

    def __init__(self, sft: dict, heldout_fraction: float):
        super().__init__()
        self.sft, self.heldout_fraction = sft, heldout_fraction

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from ..config.core import build_section
        from .config import SftFormatConfig
        from .sft import Diversifier

        div = Diversifier(build_section(SftFormatConfig, self.sft))
        for doc in data:
            sample = doc.metadata.pop("sample", None)
            if sample is not None:
                doc.text, spans = div.format(sample, doc.metadata["uid"], doc.metadata["file_key"])
                doc.metadata["spans"] = spans
                # Held-out candidates never become few-shot examples inside training prompts.
                if not is_heldout_hash(doc.metadata["hi"], self.heldout_fraction):
                    div.remember(doc.metadata["file_key"], sample)
            yield doc


class TokenizePack(PipelineStep):
    """Tokenise (batched), append EOS, route held-out documents, and pack into this task's shards."""

    name = "xmodel tokenize + pack"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer_dir: str, out: str, work: str, seq_len: int, dtype: str, eos_id: int,
                 heldout_fraction: float, heldout_tokens_per_task: int, mask_sources: list[str],
                 mask_prompt: bool, single_threaded: bool):
        super().__init__()
        self.tokenizer_dir, self.out, self.work = tokenizer_dir, out, work
        self.seq_len, self.dtype, self.eos_id = seq_len, dtype, eos_id
        self.heldout_fraction, self.heldout_cap = heldout_fraction, heldout_tokens_per_task
        self.mask_sources, self.mask_prompt = set(mask_sources), mask_prompt
        self.single_threaded = single_threaded

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if self.single_threaded:  # one task per core: no extra threads inside each task
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        from ..tokenizer.train import load_tokenizer

        tok = load_tokenizer(self.tokenizer_dir)
        resize = getattr(tok.model, "_resize_cache", None)  # tokenizers >= 0.21.1
        if resize is not None:
            resize(TOKENIZER_CACHE_ENTRIES)
        writers: dict[tuple[str, str], ShardWriter] = {}
        heldout_tokens: dict[str, int] = {}
        chars: dict[str, int] = {}
        batch: list[Document] = []
        batch_chars = 0
        dtype = np.dtype(self.dtype)

        def writer(source: str, split: str) -> ShardWriter:
            key = (source, split)
            if key not in writers:
                base = Path(self.out) / "sources" / source / f"{split}-{rank:05d}"
                writers[key] = ShardWriter(base, self.seq_len, np.dtype(self.dtype), source in self.mask_sources)
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
                    ids.append(self.eos_id)
                    encoded[id(d)] = (np.array(ids, dtype=dtype), None)
            if chat:
                for d, enc in zip(chat, tok.encode_batch([d.text for d in chat], add_special_tokens=False)):
                    ids = enc.ids
                    ids.append(self.eos_id)
                    starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(ids) - 1)
                    mask = np.zeros(len(ids), dtype=bool)
                    mask[-1] = True  # the EOS ends the answer: it is learned
                    for a, b in d.metadata["spans"]:
                        mask[:-1] |= (starts >= a) & (starts < b)
                    encoded[id(d)] = (np.array(ids, dtype=dtype), mask if self.mask_prompt else None)
            for d in batch:  # in stream order, so the packing is deterministic
                ids, mask = encoded[id(d)]
                source = d.metadata["source"]
                split = "train"
                if is_heldout_hash(d.metadata["hi"], self.heldout_fraction) \
                        and heldout_tokens.get(source, 0) + len(ids) <= self.heldout_cap:
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
        report: dict[str, dict] = {}
        for (source, split), w in sorted(writers.items()):
            report.setdefault(source, {"chars": chars.get(source, 0)})[split] = w.close()
        _write_task_json(self.work, f"pack-{rank:05d}.json", report)
        return
        yield


class AssembleManifest(PipelineStep):
    """One task: merge the per-task counts into sources/<name>/index.json and manifest.json (written last)."""

    name = "xmodel manifest"
    type = "📝 - WRITER"

    def __init__(self, cfg: dict, inputs: list[dict], out: str, tokenizer_hash: str, vocab_size: int, dtype: str,
                 fingerprint: str):
        super().__init__()
        self.cfg, self.inputs, self.out = cfg, inputs, out
        self.tokenizer_hash, self.vocab_size = tokenizer_hash, vocab_size
        self.dtype, self.fingerprint = dtype, fingerprint

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from ..config.core import build_section
        from .config import DataConfig
        from .prepare import assemble_manifest

        assemble_manifest(build_section(DataConfig, self.cfg, "data"), self.inputs, Path(self.out),
                          self.tokenizer_hash, self.vocab_size, self.dtype, self.fingerprint)
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
