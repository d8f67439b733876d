"""The training loop: learning, exact resume after SIGKILL, corrupted checkpoints, NaN steps, decay branches,
and DDP / FSDP2 under torchrun (gloo, 2 CPU processes) against one process."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xmodel.train import checkpoint as ckpt
from xmodel.train.metrics import read_metrics
from xmodel.train.schedule import lr_at
from xmodel.train.start import Start
from xmodel.train.trainer import train as train_model

from .train_helpers import PatternSource, tiny_train_config

REPO = Path(__file__).resolve().parent.parent


def train(cfg, data, run_dir, **kwargs):
    return train_model(cfg.model, cfg.train, data, run_dir, **kwargs)


def script(run_dir, steps, *extra):
    return [sys.executable, "-m", "tests.train_script", str(run_dir), str(steps), *extra]


def losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "loss" in r}


def test_loss_decreases_and_checkpoints_load(tmp_path):
    cfg = tiny_train_config(24, **{"train.save_every": 8, "train.keep_last": 2, "train.keep_every": 16,
                                   "train.eval_every": 8})
    result = train(cfg, PatternSource(97, 32), tmp_path, heldout=PatternSource(97, 32, seed=7), progress=False)
    assert result.step == 24
    assert sum(result.losses[-4:]) / 4 < 0.6 * sum(result.losses[:4]) / 4
    evals = [r["eval_loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if "eval_loss" in r]
    assert len(evals) >= 3 and evals[-1] < evals[0]
    # keep_last=2 plus every 16th: steps 16 and 24 remain (8 pruned).
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [16, 24]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(result.last_checkpoint / "model")
    ids = PatternSource(97, 32).batch(0, 1)["input_ids"]
    assert torch.isfinite(model(ids).logits).all()


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """`train.compile true` (the trainer's torch.compile path, and the fused loss's compiled form) trains to the
    same losses as eager: fp32, four steps of two accumulated micro-batches."""
    eager = train(tiny_train_config(4), PatternSource(97, 32), tmp_path / "eager", callbacks=[])
    compiled = train(tiny_train_config(4, **{"train.compile": True}), PatternSource(97, 32), tmp_path / "compiled",
                     callbacks=[])
    assert len(compiled.losses) == len(eager.losses) == 4
    for step, (a, b) in enumerate(zip(eager.losses, compiled.losses), 1):
        assert abs(a - b) <= 1e-4 * abs(a), (step, a, b)
    assert compiled.losses[-1] < compiled.losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, optimizer):
    steps = 16
    full, killed = tmp_path / "full", tmp_path / "killed"
    common = ["train.save_every=3", f"train.optimizer={optimizer}"]
    subprocess.run(script(full, steps, *common), cwd=REPO, check=True, capture_output=True, timeout=600)
    kill_after = random.Random(os.getpid()).randint(4, 12)
    proc = subprocess.Popen(script(killed, steps, *common), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (killed / "metrics.jsonl").exists() and max(losses(killed), default=0) >= kill_after:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(killed)) < steps  # it really died mid-run
    res = subprocess.run(script(killed, steps, *common), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout
    assert losses(killed) == losses(full)  # every step's loss, bit for bit


def test_corrupted_newest_checkpoint_is_detected(tmp_path):
    cfg = tiny_train_config(8, **{"train.save_every": 4, "train.keep_last": 5})
    train(cfg, PatternSource(97, 32), tmp_path, progress=False)
    (_, older), (_, newest) = ckpt.list_checkpoints(tmp_path)
    assert ckpt.verify(newest) is None
    weights = newest / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "checksum mismatch" in ckpt.verify(newest) and "model.safetensors" in ckpt.verify(newest)
    messages = []
    assert ckpt.latest_valid(tmp_path, log=messages.append) == older
    assert "model.safetensors" in messages[0]
    before = {p: p.stat().st_mtime_ns for p in newest.rglob("*") if p.is_file()}
    # Resuming continues from the older one, logs why, and leaves the corrupt files as they were.
    log = []
    result = train(tiny_train_config(10, **{"train.save_every": 100}), PatternSource(97, 32), tmp_path,
                   progress=False, log=log.append)
    assert any("skipping invalid checkpoint" in m for m in log) and any("step 4" in m for m in log)
    assert result.step == 10
    # The corrupt checkpoint was set aside byte for byte (not pruned, not overwritten), the older one kept.
    aside = newest.with_name(newest.name + ".invalid")
    assert before == {newest / p.relative_to(aside): p.stat().st_mtime_ns for p in aside.rglob("*") if p.is_file()}
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 10]
    # Truncation is caught by size.
    state_file = next((older / "state").glob("*.distcp"))
    state_file.write_bytes(state_file.read_bytes()[:10])
    assert "truncated" in ckpt.verify(older)


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    """From step 6 on every loss is NaN (a forward hook): each such step is skipped on the device (the weights
    stay those of step 5), counted as a step, reported, and the third in a row stops the run."""
    from xmodel.train.callbacks import Callback

    class PoisonAfterFive(Callback):
        def on_start(self, run):
            self.run = run
            run.built.module.model.embed_tokens.register_forward_hook(
                lambda mod, args, out: out * float("nan") if run.state.step >= 5 else out)

        def on_step(self, run, record):
            if run.state.step == 5:
                self.weights = {k: v.detach().clone() for k, v in run.built.module.state_dict().items()}

    cfg = tiny_train_config(12, **{"train.max_bad_steps": 3, "train.save_every": 100})
    poison, log = PoisonAfterFive(), []
    result = train(cfg, PatternSource(97, 32), tmp_path, extra_callbacks=[poison], progress=False, log=log.append)
    assert result.stopped_early and "3 consecutive non-finite steps" in result.stopped_early
    assert result.step == 8 and sum("non-finite step(s) skipped" in m for m in log) == 3
    after = poison.run.built.module.state_dict()
    assert all(torch.equal(poison.weights[k], after[k]) for k in after)  # skipped steps changed nothing
    assert result.last_checkpoint is not None and ckpt.verify(result.last_checkpoint) is None
    state = json.loads((result.last_checkpoint / "trainer_state.json").read_text())["state"]
    assert state["bad_steps_total"] == 3 and state["data_position"] == 8 * 4


def test_decay_branch_from_stable_checkpoint(tmp_path):
    stable_dir, branch_dir = tmp_path / "stable", tmp_path / "branch"
    cfg = tiny_train_config(12, **{"train.save_every": 6, "train.keep_last": 5,
                                   "train.schedule.half_life": 2.0})
    train(cfg, PatternSource(97, 32), stable_dir, progress=False)
    snapshot = {p: p.read_bytes() for p in stable_dir.rglob("*") if p.is_file()}
    source = ckpt.list_checkpoints(stable_dir)[0][1]  # step 6, not the newest
    branch_cfg = tiny_train_config(4, **{"train.schedule.half_life": 2.0})
    result = train(branch_cfg, PatternSource(97, 32, seed=5), branch_dir,
                   start=Start(stage="decay", branch_from=source), progress=False)
    assert result.step == 10
    rows = read_metrics(branch_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [7, 8, 9, 10]
    sched = branch_cfg.train.schedule
    assert [r["lr"] for r in rows] == [0.01 * 0.5 ** (s / 2.0) for s in range(4)]
    assert lr_at(5, sched) == 0.01  # the stable run's rate before the branch point is untouched
    assert snapshot == {p: p.read_bytes() for p in stable_dir.rglob("*") if p.is_file()}  # stable run untouched
    state = json.loads((result.last_checkpoint / "trainer_state.json").read_text())["state"]
    assert state["stage"] == "decay" and state["branch_start"] == 6


def run_torchrun(run_dir, steps, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + random.randint(0, 2000)), "-m", "tests.train_script", str(run_dir), str(steps), *extra]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return losses(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("mode, optimizer", [("ddp", "adamw"), ("fsdp", "adamw"), ("fsdp", "muon")])
def test_torchrun_two_processes_match_one(tmp_path, mode, optimizer):
    # Global batch 8 sequences: one process runs 4 micro-batches of 2; two ranks run 2 each. Under FSDP2 Muon's
    # Newton–Schulz runs on DTensor shards, whose matmuls redistribute them: it sees whole matrices.
    steps = 6
    single = losses_one = None
    opt = f"train.optimizer={optimizer}"
    subprocess.run(script(tmp_path / "one", steps, "train.batch_tokens=256", opt), cwd=REPO, check=True,
                   capture_output=True, timeout=600)
    single = losses(tmp_path / "one")
    multi = run_torchrun(tmp_path / mode, steps, "train.batch_tokens=256", f"train.parallel={mode}", opt)
    assert single.keys() == multi.keys()
    # fp32 with a different summation order across ranks: equal to ~1e-6 relative at first, and the runs
    # stay together; 1e-4 leaves room for the drift of six AdamW steps. Muon's Newton–Schulz iteration runs in
    # bf16 (torch's), where a different reduction order moves the update by bf16 rounding: 1e-3 (seen: 1.1e-4).
    tolerance = 1e-4 if optimizer == "adamw" else 1e-3
    for s in single:
        assert abs(single[s] - multi[s]) <= tolerance * abs(single[s]), (s, single[s], multi[s])
    # Resume under torchrun: continue the distributed run to 8 steps from its checkpoint.
    more = run_torchrun(tmp_path / mode, steps + 2, "train.batch_tokens=256", f"train.parallel={mode}", opt)
    assert len(more) == steps + 2 and all(more[s] == multi[s] for s in multi)
    del losses_one
