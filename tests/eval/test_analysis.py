"""Calibration (ECE, reliability diagram) and the post-training scaling-law fit, on synthetic data with known
answers and on a real model over the WikiText-2 test file."""

import numpy as np
import pytest
import torch

from xmodel.errors import XmodelError
from xmodel.eval.calibration import calibration, choice_confidences, reliability_diagram
from xmodel.eval.scaling_law import WIKITEXT2_TEST, fit_power_law, loss_by_position, power_law


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.25, 1.0, 200_000)
    correct = rng.uniform(size=conf.size) < conf  # right with exactly the stated probability
    result = calibration(conf, correct)
    assert result.ece < 0.005
    assert sum(result.bin_count) == conf.size and result.bin_count[0] == 0


def test_overconfident_predictor_has_large_ece():
    rng = np.random.default_rng(1)
    conf = np.full(10_000, 0.9)
    correct = rng.uniform(size=conf.size) < 0.5
    result = calibration(conf, correct)
    assert result.ece == pytest.approx(0.4, abs=0.02)
    assert result.bin_count[8] == 10_000  # 0.9 falls in the (0.8, 0.9] bin


def test_confidences_from_lm_eval_samples_and_plot(tmp_path):
    # Two questions as lm-eval logs them: one (loglikelihood, is_greedy) pair per letter, and the gold index.
    samples = {"xmodel_mmlu_x": [
        {"filtered_resps": [[-1.0, False], [-2.0, False], [-3.0, False], [-4.0, False]], "target": 0},
        {"filtered_resps": [[-2.0, False], [-0.5, False], [-2.0, False], [-2.0, False]], "target": 2},
    ]}
    conf, correct = choice_confidences(samples)
    p1 = np.exp(-1.0) / np.exp([-1.0, -2.0, -3.0, -4.0]).sum()
    assert conf[0] == pytest.approx(p1) and correct.tolist() == [True, False]
    path = reliability_diagram(calibration(conf, correct), tmp_path / "cal.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("a,b,c", [(-0.575, 1.772, 32.84), (-0.3, 3.1, 5.0), (-1.2, 2.5, 120.0)])
def test_power_law_fit_recovers_known_parameters(a, b, c):
    rng = np.random.default_rng(2)
    t = np.arange(1, 2048, dtype=float)
    loss = power_law(t, a, b, c) + rng.normal(0, 0.01, t.size)
    fit = fit_power_law(t, loss)
    for name, true in (("a", a), ("b", b), ("c", c)):
        est, err = getattr(fit, name), getattr(fit, f"{name}_err")
        assert abs(est - true) < 5 * err + 1e-9, (name, est, err, true)
        assert err < 0.05 * abs(true)
    assert fit.r2 > 0.9


def test_power_law_fit_needs_points():
    with pytest.raises(XmodelError, match="need at least 4"):
        fit_power_law([1, 2, 3], [3.0, 2.0, 1.5])


def test_loss_by_position_on_wikitext2_matches_the_model_loss(nano_model_dir, data_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(nano_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(nano_model_dir)
    text = (data_root / WIKITEXT2_TEST).read_text(encoding="utf-8")[:20_000]
    model.train()
    loss, windows = loss_by_position(model, tokenizer, text, context_length=64, max_windows=3, progress=False)
    assert loss.shape == (63,) and windows == 3 and np.isfinite(loss).all()
    assert model.training  # put back as it was
    # Averaged over positions, it is the model's own mean next-token loss on the same windows.
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"][:3 * 64]).view(3, 64)
    with torch.no_grad():
        ref = model.eval()(input_ids=ids, labels=ids).loss.item()
    assert loss.mean() == pytest.approx(ref, rel=1e-4)
