"""A training run on prepared data: the glue between the data pipeline and the loop.

    result = run_stage(cfg, prepared_dir, tokenizer_dir, run_dir, stage="stable")
    branch = run_stage(cfg, prepared_dir, tokenizer_dir, branch_dir, stage="decay", branch_from=ckpt)

`xmodel train`, `xmodel quickstart` and the wind tunnel's trials all go through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config, config_to_dict
from ..data.mixture import IGNORE_INDEX, build_sampler
from ..data.shards import check_tokenizer, check_vocab, load_manifest
from ..errors import XmodelError
from .metrics import plot_run
from .start import Start
from .trainer import TrainResult, train


class HeldoutSource:
    """The held-out sequences of a mixture's sources as one `BatchSource`, interleaved source by source so
    that the first N sequences cover every source (eval loss on `train.eval_sequences` is then balanced)."""

    def __init__(self, sampler):
        self.seq_len = sampler.seq_len
        datasets = [sampler.heldout(name) for name in sampler.heldout_sources()]
        datasets = [d for d in datasets if len(d)]
        if not datasets:
            raise XmodelError(f"{sampler.manifest.path}: no held-out sequences (data.heldout)")
        # Round-robin order over (dataset, row) pairs.
        order = []
        for i in range(max(len(d) for d in datasets)):
            order.extend((k, i) for k, d in enumerate(datasets) if i < len(d))
        self.datasets, self.order = datasets, order

    def __len__(self) -> int:
        return len(self.order)

    def batch(self, start: int, count: int) -> dict:
        rows, labels = [], []
        for k, i in (self.order[(start + j) % len(self.order)] for j in range(count)):
            ids, mask = self.datasets[k].get_many(np.array([i]))
            rows.append(ids[0])
            labels.append(ids[0] if mask is None else np.where(mask[0], ids[0], IGNORE_INDEX))
        return {"input_ids": torch.from_numpy(np.stack(rows).astype(np.int64)),
                "labels": torch.from_numpy(np.stack(labels).astype(np.int64))}


def run_stage(cfg: Config, prepared: str | Path, tokenizer_dir: str | Path, run_dir: str | Path, *,
              stage: str = "stable", branch_from: str | Path | None = None, resume: str = "auto",
              allow_config_change: bool = False, progress: bool = True, log=print,
              plots: bool = True) -> TrainResult:
    from transformers import AutoTokenizer

    manifest = load_manifest(prepared)
    check_tokenizer(manifest, tokenizer_dir)
    check_vocab(manifest, cfg.model.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sampler = build_sampler(manifest, cfg.data, stage=stage, seed=cfg.train.seed)
    start = Start(resume=resume, stage=stage, branch_from=Path(branch_from) if branch_from else None,
                  allow_config_change=allow_config_change)
    result = train(cfg.model, cfg.train, sampler, run_dir, start=start, heldout=HeldoutSource(sampler),
                   tokenizer=tokenizer, run_record=config_to_dict(cfg), progress=progress, log=log)
    if plots:
        plot_run(run_dir)
    return result
