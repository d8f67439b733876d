"""The main job end to end on the real data root: `xmodel quickstart --fast` (slow; runs in CI)."""

import json
import subprocess
import sys

import pytest
import torch

from xmodel.data.root import data_root


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    root = data_root()
    out = tmp_path / "qs"
    res = subprocess.run([sys.executable, "-m", "xmodel.cli.main", "quickstart", "--fast", "--output", str(out),
                          "--data-root", str(root)], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Xmodel quickstart done" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    # The stable stage learned (its held-out loss ends 2 nats below its first step's training loss, ~10.6), and
    # the decay branch ends below the stable checkpoint on the decay mixture's held-out set and on WikiText-2.
    # The stable mixture's held-out loss is reported, not asserted: in 8 nano steps the 64 % SFT share can move
    # it either way (7.08 vs 6.91 in one run).
    first = json.loads((out / "stable" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and summary["stable"]["stable_heldout_loss"] < first["loss"] - 2.0
    assert summary["decay"]["decay_heldout_loss"] < summary["stable"]["decay_heldout_loss"]
    assert summary["wikitext2"]["decay"]["loss"] < summary["wikitext2"]["stable"]["loss"]
    for name in ("report.md", "report.html", "plots/loss.png", "plots/lr.png", "stable/metrics.jsonl",
                 "decay/metrics.jsonl", "eval/results.json"):
        assert (out / name).is_file(), name
    assert "WikiText-2" in (out / "report.md").read_text()
    # The model directory loads with plain transformers Auto classes and generates.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    ids = tok("The meaning of life is", return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 5 and torch.isfinite(model(ids).logits).all()
