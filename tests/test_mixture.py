"""The mixture sampler over real prepared data: shares, determinism by position, held-out separation, labels."""

import numpy as np
import pytest

from xmodel.data.batches import IGNORE_INDEX
from xmodel.data.heldout import HeldoutSource
from xmodel.data.mixture import MixtureSampler, build_sampler
from xmodel.data.permute import permute
from xmodel.errors import XmodelError

from .data_helpers import small_data_config


@pytest.mark.parametrize("stage", ["stable", "decay"])
def test_realised_shares_within_one_point_over_10k_sequences(prepared, small_cfg, stage):
    sampler = build_sampler(prepared, small_cfg, stage, seed=11)
    configured = small_cfg.stage_weights(stage)
    assert sampler.weights == pytest.approx(configured)
    for start in (0, 123_457):
        realised = sampler.shares(start, 10_000)
        for name, share in configured.items():
            assert abs(realised[name] - share) <= 0.01, (name, realised[name], share)
    if stage == "decay":
        sft = sum(v for k, v in sampler.shares(0, 10_000).items() if k.startswith("sft."))
        assert abs(sft - 0.64) <= 0.01


def test_same_seed_and_position_give_the_same_batch_after_a_restart(prepared, small_cfg):
    a = build_sampler(prepared, small_cfg, "decay", seed=5)
    full = a.batch(1000, 32)
    b = build_sampler(prepared.path, None, "decay", seed=5)  # a fresh process would do exactly this
    assert (b.batch(1000, 32)["input_ids"] == full["input_ids"]).all()
    assert (b.batch(1000, 32)["labels"] == full["labels"]).all()
    # Any split of the positions (ramping batch, ranks taking slices) reads the same sequences.
    parts = [b.batch(1000 + s, n)["input_ids"] for s, n in ((0, 5), (5, 11), (16, 16))]
    assert (np.concatenate(parts) == full["input_ids"].numpy()).all()
    other = build_sampler(prepared, small_cfg, "decay", seed=6).batch(1000, 32)["input_ids"]
    assert not (other == full["input_ids"]).all()
    assert full["input_ids"].dtype.is_floating_point is False and tuple(full["input_ids"].shape) == (32, 256)


def test_labels_mask_only_sft_prompt_tokens(prepared, small_cfg):
    sampler = build_sampler(prepared, small_cfg, "decay", seed=1)
    src, _ = sampler.assignments(0, 400)
    batch = sampler.batch(0, 400)
    ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
    masked = labels == IGNORE_INDEX
    assert ((labels == ids) | masked).all()
    is_sft = np.array([sampler.names[s].startswith("sft.") for s in src])
    assert not masked[~is_sft].any()
    assert 0.1 < masked[is_sft].mean() < 0.9


def test_heldout_sequences_never_appear_in_training_batches(prepared, small_cfg):
    sampler = build_sampler(prepared, small_cfg, "stable", seed=0)
    train_rows = {row.tobytes() for row in sampler.batch(0, 6000)["input_ids"].numpy()}
    held = HeldoutSource(sampler)
    assert len(held) == sum(prepared.split(n, "heldout").sequences for n in ("en", "zh", "code")) > 0
    assert all(prepared.split(n, "heldout").sequences > 0 for n in ("en", "zh", "code"))
    rows = held.batch(0, len(held))["input_ids"].numpy()
    assert len({row.tobytes() for row in rows}) == len(held)  # every held-out sequence once
    assert not any(row.tobytes() in train_rows for row in rows)


def test_each_epoch_visits_every_sequence_once(prepared, small_cfg):
    sampler = build_sampler(prepared, small_cfg, "stable", seed=2)
    code = sampler.names.index("code")
    n = len(sampler.datasets[code])
    positions = int(n / sampler.weights["code"] * 2.2)
    src, seq = sampler.assignments(0, positions)
    draws = seq[src == code]
    assert len(draws) >= 2 * n
    assert sorted(draws[:n].tolist()) == list(range(n)) == sorted(draws[n:2 * n].tolist())
    assert draws[:n].tolist() != draws[n:2 * n].tolist()  # a new order each epoch


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 4097])
def test_permute_is_a_bijection(n):
    out = permute(np.arange(n), n, key=123)
    assert sorted(out.tolist()) == list(range(n))
    if n > 16:
        assert out.tolist() != list(range(n))


def test_mixture_errors_are_one_line(prepared, small_cfg):
    with pytest.raises(XmodelError, match="data.seq_len is 512 but .* was prepared with seq_len 256"):
        build_sampler(prepared, small_data_config(seq_len=512), "stable")
    with pytest.raises(XmodelError, match="no prepared source 'nope'"):
        MixtureSampler(prepared, {"nope": 1.0})
    cfg = small_data_config(decay={"categories": {"math": 1.0, "code": 1.0}, "sft": {"math": []}})
    with pytest.raises(XmodelError, match="code has weight but no files"):
        build_sampler(prepared, cfg, "decay")
