"""`prepare_data`: configured sources → deduplicated, tokenised, packed shards and a manifest.

    manifest = prepare_data(cfg.data, "runs/tokenizer", "runs/data")     # cfg = xmodel.config.load_config(...)

Stages (datatrove pipelines, see `pipeline.py`; each runs `tasks` tasks on `workers` processes):
signatures → pairs → clusters (dedup, skipped when dedup is off) → pack → manifest. Every stage's finished
tasks are recorded by datatrove, so an interrupted run that is started again continues where it stopped, and
the files it writes are identical to those of an uninterrupted run. Nothing is written before every source has
been checked (missing path, wrong format or field name, empty file → one-line XmodelError).

Running on a cluster: `slurm_executors` runs the same stages under datatrove's `SlurmPipelineExecutor`
(`build_stages(plan_preparation(...))` gives the pipelines for any other executor); see docs/DATA.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config.core import build_section
from ..errors import ConfigError, XmodelError
from ..tokenizer.loading import document_separator, load_tokenizer, tokenizer_hash
from ..tokenizer.special import ChatRenderer
from .config import SFT_CATEGORIES, DataConfig
from .manifest import MANIFEST, Manifest, TaskReports, load_manifest
from .pipeline import (AssembleManifest, DecideRemovals, DropRemoved, FindPairs, FormatSft, ReadSources, TokenizePack,
                       WriteSignatures, run_stage)
from .plan import WORK, InputSource, Plan
from .root import data_root as resolve_data_root
from .shards import token_dtype

FINGERPRINT = "fingerprint"


@dataclass
class Stage:
    name: str
    pipeline: list
    tasks: int
    progress: bool = True


def _coerce_cfg(cfg) -> DataConfig:
    if isinstance(cfg, DataConfig):
        return cfg
    if isinstance(cfg, dict):
        return build_section(DataConfig, cfg, "data")
    data = getattr(cfg, "data", None)  # a whole xmodel Config
    if isinstance(data, DataConfig):
        return data
    raise XmodelError(f"prepare_data: expected a DataConfig, got {type(cfg).__name__}")


def build_inputs(cfg: DataConfig, root: Path, check: bool = True) -> list[InputSource]:
    """Every file group to read: the pretraining sources, then the SFT files of each category.

    Paths are resolved now (a pattern that matches nothing is an error) and, with `check`, the first records
    of every file are read to catch a wrong format or field name before any output is written.
    """
    inputs = [InputSource.pretrain(i, s, root) for i, s in enumerate(cfg.sources)]
    for category in SFT_CATEGORIES:
        for position, f in enumerate(cfg.decay.sft.get(category, [])):
            inputs.append(InputSource.sft(len(inputs), category, position, f, root))
    if not inputs:
        raise XmodelError("data.sources: no sources and no decay.sft files configured")
    if len(inputs) > 255:
        raise XmodelError(f"data: {len(inputs)} inputs; at most 255 sources + SFT files")
    if check:
        for inp in inputs:
            inp.check()
    return inputs


def fingerprint(cfg: DataConfig, tokenizer_hash: str, inputs: list[InputSource]) -> str:
    """What the output depends on: the data settings (not workers or tokenizer training), the tokenizer, the
    input files (path, size, mtime)."""
    settings = asdict(cfg)
    for key in ("workers", "tokenizer"):
        settings.pop(key, None)
    files = []
    for inp in inputs:
        for f in inp.files:
            p = Path(f)
            st = p.stat() if p.exists() else None
            files.append([f, st.st_size if st else None, int(st.st_mtime) if st else None])
    blob = json.dumps({"settings": settings, "tokenizer": tokenizer_hash, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def plan_preparation(cfg, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     data_root: str | os.PathLike | None = None, workers: int | None = None) -> Plan:
    """Resolve the data root, the tokenizer and every input file, and read the first records of each file:
    a bad path, format, field name or tokenizer is a one-line XmodelError here, before anything is written."""
    cfg = _coerce_cfg(cfg)
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {workers}")
        cfg = replace(cfg, workers=workers)
    root = resolve_data_root(data_root)
    tokenizer_dir = Path(tokenizer_dir).resolve()
    tok = load_tokenizer(tokenizer_dir)
    tok_hash = tokenizer_hash(tokenizer_dir)
    vocab = tok.get_vocab_size()
    try:
        cfg.stage_weights("stable") if cfg.sources else None
        cfg.stage_weights("decay") if cfg.decay.sft else None
    except ValueError as e:
        raise ConfigError(f"data.{e}") from None
    inputs = build_inputs(cfg, root)
    separator, separator_id = document_separator(tokenizer_dir, tok, cfg.document_separator)
    if cfg.decay.sft:
        ChatRenderer(str(tokenizer_dir), cfg.sft.chat_template).check(str(tokenizer_dir))
    return Plan(cfg, root, tokenizer_dir, Path(out_dir).resolve(), tuple(inputs), tok_hash, vocab,
                token_dtype(vocab).name, separator_id, fingerprint(cfg, tok_hash, inputs), separator=separator)


def build_stages(plan: Plan) -> list[Stage]:
    """The pipelines, in order. Each is a plain list of datatrove blocks, runnable by any datatrove executor."""
    cfg, work = plan.cfg, str(plan.work)
    dedup = cfg.dedup
    use_dedup = dedup.exact or dedup.near
    dedup_dir = str(plan.dedup_dir)
    stages = []
    if use_dedup:
        stages.append(Stage("signatures", [ReadSources(plan.inputs, work, "signatures", cfg.heldout.fraction),
                                           WriteSignatures(dedup_dir, dedup.shingle)], cfg.tasks))
        if dedup.near:
            stages.append(Stage("pairs", [FindPairs(dedup_dir, dedup)], cfg.tasks, progress=False))
        source_names = {inp.index: inp.source for inp in plan.inputs}
        stages.append(Stage("clusters", [DecideRemovals(dedup_dir, dedup, source_names, work)], 1, progress=False))
    stages.append(Stage("pack", [
        ReadSources(plan.inputs, work, "pack", cfg.heldout.fraction),
        DropRemoved(dedup_dir if use_dedup else None),
        FormatSft(cfg.sft, str(plan.tokenizer_dir)),
        TokenizePack(plan.pack_settings(), work),
    ], cfg.tasks))
    stages.append(Stage("manifest", [AssembleManifest(plan)], 1, progress=False))
    return stages


def _prepare_out_dir(out: Path, fp: str, overwrite: bool) -> None:
    work = out / WORK
    marker = work / FINGERPRINT
    if out.exists() and any(out.iterdir()):
        same = marker.is_file() and marker.read_text().strip() == fp
        if not same:
            if not overwrite:
                why = "was prepared with other settings, tokenizer or input files" if marker.is_file() \
                    else "is not empty"
                raise XmodelError(f"{out}: {why}; pass --overwrite to replace it or choose another --out")
            ours = marker.is_file() or (out / MANIFEST).is_file()
            if not ours and any(p.name not in ("sources", WORK, MANIFEST) for p in out.iterdir()):
                raise XmodelError(f"{out}: holds files that are not prepared data; refusing to overwrite")
            for name in ("sources", WORK):
                shutil.rmtree(out / name, ignore_errors=True)
            (out / MANIFEST).unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp + "\n")


def prepare_data(cfg, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 data_root: str | os.PathLike | None = None, *, overwrite: bool = False, workers: int | None = None,
                 progress: bool = True, log=print) -> Manifest:
    """Prepare packed shards for `cfg` (a DataConfig, its dict, or a whole Config) with the tokenizer in
    `tokenizer_dir`, into `out_dir`; returns the `Manifest`.

    Idempotent: when `out_dir` already holds the same preparation it is returned as is; an interrupted run
    continues (finished tasks are kept); other contents are refused unless `overwrite`.
    `workers` overrides cfg.workers (it does not change the output).
    """
    plan = plan_preparation(cfg, tokenizer_dir, out_dir, data_root, workers)
    out = plan.out
    if (out / MANIFEST).is_file():
        existing = load_manifest(out)
        if existing.fingerprint == plan.fingerprint:
            log(f"{out_dir}: already prepared with these settings (tokenizer {plan.tokenizer_hash}); nothing to do")
            return existing
    _prepare_out_dir(out, plan.fingerprint, overwrite)
    log(f"document separator: {plan.separator} (id {plan.eos_id})"
        + ("" if plan.cfg.document_separator else "; set data.document_separator to choose another"))
    t0 = time.perf_counter()
    total = None
    for stage in build_stages(plan):
        if stage.name == "manifest":
            # One small task that writes the manifest last; run here rather than through an executor, whose
            # process manager would take longer to start than the task takes. No completion mark is needed:
            # a finished manifest is what the next run checks first.
            for step in stage.pipeline:
                for _ in step.run(None, rank=0, world_size=1):
                    pass
            continue
        run_stage(stage.name, stage.pipeline, stage.tasks, plan.cfg.workers, plan.work, total=total,
                  progress=progress and stage.progress)
        if stage.name == "signatures":
            total = sum(r.read for r in TaskReports(plan.work).reads("signatures").values())
    manifest = load_manifest(out)
    train = sum(manifest.split(name).sequences for name in manifest.sources)
    log(f"prepared {out_dir}: {train:,} training sequences of {plan.cfg.seq_len} tokens from "
        f"{len(manifest.sources)} sources in {time.perf_counter() - t0:.1f}s")
    return manifest


def slurm_executors(cfg, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    data_root: str | os.PathLike | None = None, *, partition: str, time_limit: str = "24:00:00",
                    overwrite: bool = False, **slurm_kwargs) -> list:
    """The same stages as `prepare_data`, as a chain of datatrove `SlurmPipelineExecutor`s (each depends on the
    one before). `executors[-1].run()` submits them all with sbatch; tasks that already finished (in an earlier
    submission or a local run into the same directory) are skipped. Paths must be on storage every node sees.
    `slurm_kwargs` go to SlurmPipelineExecutor (cpus_per_task, mem_per_cpu_gb, venv_path, sbatch_args, ...).
    """
    from datatrove.executor import SlurmPipelineExecutor

    plan = plan_preparation(cfg, tokenizer_dir, out_dir, data_root)
    _prepare_out_dir(plan.out, plan.fingerprint, overwrite)
    executors = []
    for stage in build_stages(plan):
        executors.append(SlurmPipelineExecutor(
            pipeline=stage.pipeline, tasks=stage.tasks, time=time_limit, partition=partition,
            job_name=f"xmodel-{stage.name}", logging_dir=str(plan.out / WORK / "logs" / stage.name),
            depends=executors[-1] if executors else None, **slurm_kwargs))
    return executors
