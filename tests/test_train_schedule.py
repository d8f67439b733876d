"""Schedules equal their formulas; the batch plan follows the ramp exactly."""

import math

import pytest

from xmodel.config import ConfigError, load_config
from xmodel.train.batching import BatchPlan
from xmodel.train.schedule import ScheduleConfig, lr_at


def test_wsd_formula():
    cfg = ScheduleConfig(kind="wsd", max_lr=0.01, warmup_steps=100, decay_start=1000, half_life=5000, min_lr=1e-5)
    assert lr_at(0, cfg) == pytest.approx(0.01 / 100)
    assert lr_at(49, cfg) == pytest.approx(0.01 * 50 / 100)
    assert lr_at(100, cfg) == lr_at(999, cfg) == 0.01
    for s in (1000, 3500, 6000, 11000, 21000):
        assert lr_at(s, cfg) == pytest.approx(max(1e-5, 0.01 * 0.5 ** ((s - 1000) / 5000)))
    assert lr_at(6000, cfg) == pytest.approx(0.005)      # one half-life halves it
    assert lr_at(10**7, cfg) == 1e-5                     # the floor
    stable = ScheduleConfig(kind="wsd", max_lr=0.01, warmup_steps=100)  # no decay start: the stable stage
    assert all(lr_at(s, stable) == 0.01 for s in (100, 10**6))
    # A branch at N reproduces the stable run's rates up to N.
    branch = ScheduleConfig(kind="wsd", max_lr=0.01, warmup_steps=100, decay_start=700)
    assert [lr_at(s, branch) for s in range(700)] == [lr_at(s, stable) for s in range(700)]
    assert lr_at(701, branch) < 0.01


def test_cosine_and_linear():
    cos = ScheduleConfig(kind="cosine", max_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    assert lr_at(10, cos) == pytest.approx(1.0)
    assert lr_at(60, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, cos) == pytest.approx(0.1) and lr_at(500, cos) == pytest.approx(0.1)
    lin = ScheduleConfig(kind="linear", max_lr=1.0, warmup_steps=0, total_steps=100)
    assert lr_at(25, lin) == pytest.approx(0.75)


@pytest.mark.parametrize("override,msg", [
    (["--train.schedule.max_lr", "0"], "train.schedule.max_lr: must be > 0"),
    (["--train.schedule.kind", "cosine"], "train.schedule.total_steps: cosine needs"),
    (["--train.schedule.half_life", "-1"], "train.schedule.half_life"),
    (["--train.batch_tokens_start", "0"], "train.batch_tokens_start"),
])
def test_bad_schedule_values(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config("nano", overrides=override)


def test_batch_ramp_is_followed_exactly():
    plan = BatchPlan(seq_len=512, micro_batch=2, world_size=2, end_tokens=4 * 8192, start_tokens=2 * 8192,
                     ramp_steps=10)
    plan.validate()
    sizes = [plan.sequences_at(s) for s in range(14)]
    assert sizes[0] == 32 and sizes[10:] == [64] * 4      # 2 × 8192 tokens → 4 × 8192 tokens
    assert sizes == sorted(sizes) and all(n % plan.unit == 0 for n in sizes)
    for s in range(14):
        expected = 2 * 8192 + 2 * 8192 * min(1, s / 10)
        assert sizes[s] * 512 <= expected < sizes[s] * 512 + plan.unit * 512
    with pytest.raises(ValueError, match="not a multiple"):
        BatchPlan(seq_len=512, micro_batch=3, world_size=2, end_tokens=8192).validate()
