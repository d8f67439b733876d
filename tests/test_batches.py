"""The batch contract and its neighbours: labels from loss masks, the held-out rule and reader, mixture weights."""

import numpy as np
import pytest
import torch

from xmodel.data.batches import IGNORE_INDEX, as_batch, count_targets, labels_from_mask
from xmodel.data.heldout import HeldoutSource, is_heldout
from xmodel.data.mixture import build_sampler
from xmodel.data.weights import decay_shares, normalise_weights
from xmodel.errors import ConfigError, XmodelError


def test_labels_from_mask_ignore_unmasked_tokens_and_never_alias_the_ids():
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    mask = np.array([[True, False, True], [False, False, True]])
    assert labels_from_mask(ids, mask).tolist() == [[0, IGNORE_INDEX, 2], [IGNORE_INDEX, IGNORE_INDEX, 5]]
    plain = labels_from_mask(ids, None)
    assert plain.tolist() == ids.tolist() and not np.shares_memory(plain, ids)


def test_as_batch_gives_long_tensors_and_count_targets_skips_the_first_position():
    ids = np.array([[5, 6, 7, 8]], dtype=np.uint16)
    batch = as_batch(ids, np.array([[5, IGNORE_INDEX, 7, 8]]))
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
    assert tuple(batch["input_ids"].shape) == (1, 4)
    assert count_targets(batch["labels"]) == 2  # positions 2 and 3; position 0 is never a target


def test_heldout_rule_is_a_share_of_the_hash_range():
    assert is_heldout(0, 0.01) and not is_heldout(0, 0.0)
    assert is_heldout(int(0.25 * 2**64) - 1, 0.25) and not is_heldout(int(0.25 * 2**64), 0.25)


def test_normalise_weights_drops_zeros_and_names_the_weights_in_its_error():
    assert normalise_weights({"a": 3, "b": 1, "c": 0}, "w") == {"a": 0.75, "b": 0.25}
    with pytest.raises(ConfigError, match=r"^data.decay.categories: no weight is positive$"):
        normalise_weights({"math": 0.0}, "data.decay.categories")


def test_decay_shares_split_sft_share_over_categories():
    shares = decay_shares(0.6, {"en": 1, "zh": 3}, {"math": 1, "code": 1, "logic": 0})
    assert shares == pytest.approx({"en": 0.1, "zh": 0.3, "sft.math": 0.3, "sft.code": 0.3})
    assert decay_shares(1.0, {}, {"math": 2}) == {"sft.math": 1.0}  # no pretraining part: its weights unused


def test_the_config_and_the_wind_tunnel_use_the_same_decay_rule(small_cfg):
    from xmodel.tune.data import decay_weights

    cats = small_cfg.decay.categories
    pre = {s.name: s.weight for s in small_cfg.sources}
    assert small_cfg.stage_weights("decay") == decay_shares(small_cfg.decay.sft_share, pre, cats)
    assert decay_weights(0.64, cats) == decay_shares(0.64, {"pretrain": 1.0}, cats)


def test_heldout_source_interleaves_sources_and_masks_sft_prompts(prepared, small_cfg):
    sampler = build_sampler(prepared, small_cfg, "decay", seed=0)
    held = HeldoutSource(sampler)
    names = [n for n in sampler.names if prepared.split(n, "heldout").sequences > 0]
    assert len(held.datasets) == len(names) >= 4
    assert len(held) == sum(prepared.split(n, "heldout").sequences for n in names)
    first = held.batch(0, len(names))  # one sequence of every source, in the mixture's order
    for row, dataset in zip(first["input_ids"].numpy(), held.datasets):
        assert (row == dataset[0]["input_ids"]).all()
    labels, ids = first["labels"].numpy(), first["input_ids"].numpy()
    masked = labels == IGNORE_INDEX
    assert ((labels == ids) | masked).all()
    assert [bool(masked[k].any()) for k in range(len(names))] == [n.startswith("sft.") for n in names]
    wrapped = held.batch(len(held) - 1, 2)["input_ids"]  # positions past the end start again
    assert (wrapped[1] == first["input_ids"][0]).all()


def test_heldout_of_sources_reads_the_named_sources_only(prepared):
    held = HeldoutSource.of_sources(prepared, ["sft.math"])
    assert len(held) == prepared.split("sft.math", "heldout").sequences > 0
    assert tuple(held.batch(0, 3)["labels"].shape) == (3, prepared.seq_len)
    with pytest.raises(XmodelError, match="no prepared source 'nope'"):
        HeldoutSource.of_sources(prepared, ["nope"])
