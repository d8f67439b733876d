"""Training checkpoints: written atomically, verified by checksums, pruned by keep-last-N / keep-every-K.

Layout of ``RUN/checkpoints/step_000123/``::

    model/              save_pretrained directory with the tokenizer: `from_pretrained` loads it as is
    state/              torch.distributed.checkpoint of model + optimizer (sharded under FSDP, resharded on load)
    trainer_state.json  the `TrainState` (step, sampler position, tokens, stage, schedule, batch plan, …) and
                        the run config
    rng/rank_N.*        RNG states of every rank: the generators' tensors in safetensors, the rest in JSON
    MANIFEST.json       size and sha256 of every file above, written last

A checkpoint is data, never code: nothing in it is unpickled except the metadata file of
torch.distributed.checkpoint, which is read with an unpickler that admits only the classes DCP writes there
(`SafeFileSystemReader`).

A checkpoint is built in ``.tmp-step_000123`` and renamed into place only when complete, so a killed run
never leaves a half-written ``step_*``. A checkpoint whose manifest is missing or whose files do not match it is
invalid; `latest_valid` skips it (and says why) so ``--resume auto`` falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)

from ..errors import XmodelError
from .build import unwrap
from .rng import load_rng_state, save_rng_state
from .safe_dcp import SafeFileSystemReader, SafeLoadPlanner

STEP_DIR = re.compile(r"^step_(\d+)$")
# One process without a process group is a supported case of torch.distributed.checkpoint, not a problem.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def write_manifest(ckpt: Path) -> None:
    files = {str(p.relative_to(ckpt)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != "MANIFEST.json"}
    tmp = ckpt / "MANIFEST.json.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1))
    tmp.rename(ckpt / "MANIFEST.json")


def verify(ckpt: Path) -> str | None:
    """None if `ckpt` is complete and intact, else the reason it is not (one line, naming the file)."""
    manifest = ckpt / "MANIFEST.json"
    if not manifest.is_file():
        return f"{ckpt}: no MANIFEST.json (incomplete checkpoint)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return f"{manifest}: unreadable manifest"
    for rel, meta in files.items():
        path = ckpt / rel
        if not path.is_file():
            return f"{path}: missing"
        if path.stat().st_size != meta["bytes"]:
            return f"{path}: {path.stat().st_size} bytes, manifest says {meta['bytes']} (truncated?)"
        if _sha256(path) != meta["sha256"]:
            return f"{path}: checksum mismatch (corrupted)"
    return None


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_valid(run_dir: Path, log=print, set_aside: bool = False) -> Path | None:
    """Newest intact checkpoint; invalid newer ones are reported through `log` and skipped.

    With `set_aside` (the main rank of a resuming run) each skipped one is renamed to ``step_N.invalid``:
    kept byte for byte for inspection, but never pruned, overwritten or picked again.
    """
    found, invalid = None, []
    for _, path in reversed(list_checkpoints(run_dir)):
        problem = verify(path)
        if problem is None:
            found = path
            break
        log(f"skipping invalid checkpoint: {problem}")
        invalid.append(path)
    if found is None and invalid:  # starting over would truncate the run's metrics: the user decides
        raise XmodelError(f"{Path(run_dir) / 'checkpoints'}: every checkpoint is invalid ({len(invalid)}); "
                          f"pass --resume none to start the run over, or --resume CHECKPOINT")
    _barrier()  # every rank has looked before any is renamed
    if set_aside:
        for path in invalid:
            path.rename(path.with_name(path.name + ".invalid"))
            log(f"moved it aside to {path.name}.invalid")
    _barrier()
    return found


def save_checkpoint(run_dir: Path, step: int, model, optimizers: list, trainer_state: dict, tokenizer=None,
                    keep_last: int = 2, keep_every: int = 0, log=print) -> Path:
    """Collective under torch.distributed: every rank calls it. Returns the final checkpoint path."""
    root = Path(run_dir) / "checkpoints"
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}"
    if _is_rank0():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizers)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "state"))
    # A consolidated copy in the Hugging Face layout (gathered to rank 0 under FSDP).
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    rank = dist.get_rank() if dist.is_initialized() else 0
    save_rng_state(tmp / "rng" / f"rank_{rank}")
    if _is_rank0():
        hf_model = unwrap(model)
        from ..model.loading import save_model  # the model/ folder carries its own weight checksums

        save_model(hf_model, tmp / "model", state_dict=full)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        _fsync_tree(tmp)
        write_manifest(tmp)
        if final.exists():  # never overwrite: keep the old one aside for inspection
            final.rename(final.with_name(final.name + ".replaced"))
        tmp.rename(final)
        prune(root.parent, keep_last, keep_every, log)
    _barrier()
    return final


def prune(run_dir: Path, keep_last: int, keep_every: int, log=print) -> None:
    ckpts = list_checkpoints(run_dir)
    keep = {step for step, _ in ckpts[-keep_last:]} if keep_last > 0 else {s for s, _ in ckpts}
    for step, path in ckpts:
        if step in keep or (keep_every and step % keep_every == 0):
            continue
        shutil.rmtree(path)


def read_trainer_state(ckpt: Path) -> dict:
    """trainer_state.json of a checkpoint (before loading anything, e.g. to see which optimizer wrote it)."""
    problem = verify(ckpt)
    if problem:
        raise XmodelError(problem)
    try:
        return json.loads((ckpt / "trainer_state.json").read_text())
    except ValueError as e:
        raise XmodelError(f"{ckpt / 'trainer_state.json'}: not valid JSON ({e})") from None


def load_checkpoint(ckpt: Path, model, optimizers: list | None) -> dict:
    """Restore model and optimizers in place from `ckpt/state` (the model alone when `optimizers` is None: a
    branch that switches optimizer starts it fresh); returns trainer_state. Collective."""
    problem = verify(ckpt)
    if problem:
        raise XmodelError(problem)
    if optimizers is None:
        state = {"model": get_model_state_dict(model)}
    else:
        model_sd, optim_sd = get_state_dict(model, optimizers)
        state = {"model": model_sd, "optim": optim_sd}
    reader = SafeFileSystemReader(ckpt / "state")
    reader.read_metadata()  # refused here in one line, rather than inside DCP's collective error report
    try:
        dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner())
    except CheckpointException as e:
        raise XmodelError(load_failure(ckpt, e)) from None
    if optimizers is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"])
    trainer_state = json.loads((ckpt / "trainer_state.json").read_text())
    rank = dist.get_rank() if dist.is_initialized() else 0
    load_rng_state(ckpt / "rng" / f"rank_{rank}")  # absent when the world size grew: the fresh seed's stays
    return trainer_state


def load_failure(ckpt: Path, error: CheckpointException) -> str:
    """One line for a DCP load that failed on some rank: our own refusal as it is, else DCP's last line (a
    shape or key mismatch: the checkpoint is of another model)."""
    for failure in error.failures.values():
        cause = failure[0] if isinstance(failure, tuple) else failure  # (exception, traceback summary)
        if isinstance(cause, XmodelError):
            return str(cause) if str(ckpt) in str(cause) else f"{ckpt}: {cause}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{ckpt}: cannot be loaded into this model ({lines[-1] if lines else type(error).__name__})"
