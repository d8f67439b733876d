"""Calibration (ECE, reliability diagram) and the post-training scaling-law fit, on synthetic data with known
answers and on a real model over the WikiText-2 test file."""

import numpy as np
import pytest
import torch

from xmodel.errors import XmodelError
from xmodel.eval.calibration import (calibration, choice_confidences, mmlu_calibration, per_choice_points,
                                     reliability_diagram)
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


def _samples_with_probabilities(rows):
    """lm-eval MMLU records whose softmax over the four letters gives exactly `probs` (log p as the
    log-likelihood), with the given gold letter."""
    return {"xmodel_mmlu_x": [{"filtered_resps": [[float(np.log(p)), False] for p in probs], "target": gold}
                              for probs, gold in rows]}


def test_per_choice_calibration_bins_every_option():
    """Figure 4: each option's probability against whether it is the correct one, four points per question."""
    rows = [([0.72, 0.12, 0.09, 0.07], 0),  # confident and right
            ([0.05, 0.83, 0.06, 0.06], 2),  # confident and wrong
            ([0.44, 0.33, 0.15, 0.08], 1),  # unsure, wrong
            ([0.25, 0.25, 0.25, 0.25], 3)]  # uniform
    cal = mmlu_calibration(_samples_with_probabilities(rows))
    per = cal.per_choice
    assert cal.questions == 4 and per.n == 16
    # Bins (0, .1], (.1, .2], …: .09 .07 .05 .06 .06 .08 | .12 .15 | four .25 | .33 | .44 | – | – | .72 | .83
    assert per.bin_count == [6, 2, 4, 1, 1, 0, 0, 1, 1, 0]
    # Share of each bin's options that are correct: the gold .06 of question 2 in bin 0, the gold .25 of
    # question 4 in bin 2, the gold .33 of question 3 in bin 3, the gold .72 of question 1 in bin 7.
    assert per.bin_accuracy == [pytest.approx(1 / 6), 0.0, 0.25, 1.0, 0.0, None, None, 1.0, 0.0, None]
    assert per.bin_confidence[0] == pytest.approx(0.41 / 6) and per.bin_confidence[1] == pytest.approx(0.135)
    assert per.accuracy == pytest.approx(0.25)  # one correct option in four
    expected_ece = (6 * abs(1 / 6 - 0.41 / 6) + 2 * 0.135 + 4 * 0.0 + (1 - 0.33) + 0.44 + (1 - 0.72) + 0.83) / 16
    assert per.ece == pytest.approx(expected_ece)
    # Top label: one point per question, the chosen letter's probability and whether it was right (question 4's
    # tie picks A, the first letter, as the argmax does; its gold is D).
    top = cal.top_label
    assert top.n == 4 and top.bin_count == [0, 0, 1, 0, 1, 0, 0, 1, 1, 0]
    assert top.bin_accuracy == [None, None, 0.0, None, 0.0, None, None, 1.0, 0.0, None]
    assert top.accuracy == pytest.approx(0.25)
    d = cal.to_dict()
    assert set(d) == {"questions", "per_choice", "top_label"} and d["per_choice"]["bin_count"] == per.bin_count


def test_perfectly_calibrated_options_have_small_per_choice_ece():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=50_000)
    gold = np.array([rng.choice(4, p=p) for p in probs])  # the correct option drawn with its own probability
    conf, correct = per_choice_points(probs, gold)
    result = calibration(conf, correct)
    assert result.n == 200_000 and result.ece < 0.01


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
    both = reliability_diagram(mmlu_calibration(samples), tmp_path / "both.png")  # per choice beside top label
    assert both.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
