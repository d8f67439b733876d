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


def test_batch_step_switch_doubles_at_the_configured_step():
    """Xmodel-2 §2.5: 2M tokens per step, then 4M — a switch, not a ramp."""
    plan = BatchPlan(seq_len=4096, micro_batch=4, world_size=8, end_tokens=960 * 4096, start_tokens=480 * 4096,
                     ramp_steps=10_000, ramp="step")
    plan.validate()
    assert [plan.sequences_at(s) for s in (0, 1, 9_999)] == [480] * 3
    assert [plan.sequences_at(s) for s in (10_000, 10_001, 400_000)] == [960] * 3


@pytest.mark.parametrize("recipe, preset, sequences", [
    ("xmodel-2", "xmodel-2-1.2b", {0: 480, 9_999: 480, 10_000: 960, 386_699: 960}),
    ("xmodel-lm", "xmodel-lm-1.1b", {0: 840, 500_000: 840}),
])
def test_packaged_recipes_give_the_reports_batches(recipe, preset, sequences):
    from xmodel.train.trainer import batch_plan

    cfg = load_config(yaml_path=recipe)
    assert cfg.preset == preset and cfg.data.seq_len == 4096
    plan = batch_plan(cfg.train, cfg.data.seq_len, world_size=8)
    assert {step: plan.sequences_at(step) for step in sequences} == sequences
    if recipe == "xmodel-2":
        s = cfg.train.schedule
        assert (s.kind, s.max_lr, s.half_life, cfg.data.decay.sft_share) == ("wsd", 0.01, 5000, 0.64)
        assert cfg.model.hidden_size == 1536 and cfg.model.num_hidden_layers == 48


def test_an_unknown_config_names_the_recipes():
    with pytest.raises(ConfigError, match="config file not found .*xmodel-2, xmodel-lm"):
        load_config(yaml_path="xmodel-3")
