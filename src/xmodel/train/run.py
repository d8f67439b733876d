"""A training run on prepared data: the glue between the data pipeline and the loop.

    result = run_stage(cfg, prepared_dir, tokenizer_dir, run_dir, stage="stable")
    branch = run_stage(cfg, prepared_dir, tokenizer_dir, branch_dir, stage="decay", branch_from=ckpt)

`xmodel train`, `xmodel quickstart` and the wind tunnel's trials all go through here.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, config_to_dict
from ..data.heldout import HeldoutSource
from ..data.mixture import RECORD_KEY, build_sampler, mixture_record
from ..data.shards import check_tokenizer, check_vocab, load_manifest
from ..tokenizer.loading import load_pretrained_tokenizer
from .metrics import plot_run
from .start import Start
from .trainer import TrainResult, train


def run_stage(cfg: Config, prepared: str | Path, tokenizer_dir: str | Path, run_dir: str | Path, *,
              stage: str = "stable", branch_from: str | Path | None = None, resume: str = "auto",
              init_from: str | Path | None = None, allow_config_change: bool = False, progress: bool = True,
              log=print, plots: bool = True) -> TrainResult:
    manifest = load_manifest(prepared)
    check_tokenizer(manifest, tokenizer_dir)
    check_vocab(manifest, cfg.model.vocab_size)
    tokenizer = load_pretrained_tokenizer(tokenizer_dir)
    sampler = build_sampler(manifest, cfg.data, stage=stage, seed=cfg.train.seed)
    start = Start(resume=resume, stage=stage, branch_from=Path(branch_from) if branch_from else None,
                  init_from=Path(init_from) if init_from else None, allow_config_change=allow_config_change)
    record = {**config_to_dict(cfg), RECORD_KEY: mixture_record(sampler),
              "init_from": str(init_from) if init_from else None}
    result = train(cfg.model, cfg.train, sampler, run_dir, start=start, heldout=HeldoutSource(sampler),
                   tokenizer=tokenizer, run_record=record, progress=progress, log=log)
    if plots:
        plot_run(run_dir)
    return result
