"""The trainer on CUDA: eager and compiled steps against a CPU run, activation checkpointing, SIGKILL then
resume bit for bit, and FSDP2 (with its bf16 mixed-precision policy) under `torchrun --nproc_per_node 1`.

Tolerances, per logged step's loss, relative: fp32 on the device against fp32 on the CPU 1e-4 (the same bound as
two ranks against one in tests/test_train_loop.py: summation order differs, five AdamW steps follow); bf16
autocast against fp32 3e-2; FSDP2's bf16 policy against plain bf16 autocast 1e-2 (the layers' norm gains are
held in bf16 there).
"""

import functools
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

from xmodel.train.metrics import read_metrics
from xmodel.train.trainer import train as train_model

from ..train_helpers import PatternSource, tiny_train_config
from .common import DEVICE, MARKS, ON_CUDA

pytestmark = MARKS

REPO = Path(__file__).resolve().parents[2]
STEPS = 5


def run(tmp: Path, steps: int = STEPS, **overrides) -> list[float]:
    cfg = tiny_train_config(steps, **overrides)
    return train_model(cfg.model, cfg.train, PatternSource(97, 32), tmp, callbacks=[], progress=False).losses


@functools.lru_cache(maxsize=None)
def cpu_losses(precision: str) -> tuple[float, ...]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return tuple(run(Path(tmp), **{"train.device": "cpu", "train.precision": precision}))


def assert_losses_close(got, ref, tol, what):
    assert len(got) == len(ref) == STEPS, (what, got, ref)
    for step, (a, b) in enumerate(zip(got, ref), 1):
        assert abs(a - b) <= tol * abs(b), f"{what} step {step}: {a} vs {b} (tolerance {tol:g} relative)"


@pytest.mark.parametrize("precision,compiled", [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)],
                         ids=["fp32-eager", "fp32-compiled", "bf16-eager", "bf16-compiled"])
def test_trainer_matches_a_cpu_run(tmp_path, precision, compiled):
    got = run(tmp_path, **{"train.device": DEVICE, "train.precision": precision, "train.compile": compiled})
    assert_losses_close(got, cpu_losses("fp32"), 1e-4 if precision == "fp32" else 3e-2,
                        f"{DEVICE} {precision} {'compiled' if compiled else 'eager'} vs cpu fp32")
    assert got[-1] < got[0]


def test_activation_checkpointing_changes_nothing(tmp_path):
    plain = run(tmp_path / "plain", **{"train.device": DEVICE})
    checkpointed = run(tmp_path / "ac", **{"train.device": DEVICE, "train.activation_checkpointing": True})
    assert_losses_close(checkpointed, plain, 1e-6, "activation checkpointing on vs off")


def script(run_dir, steps, *extra):
    return [sys.executable, "-m", "tests.cuda.deterministic_train", str(run_dir), str(steps),
            f"train.device={DEVICE}", *extra]


def losses(run_dir) -> dict[int, float]:
    path = Path(run_dir) / "metrics.jsonl"
    return {r["step"]: r["loss"] for r in read_metrics(path) if "loss" in r} if path.exists() else {}


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """As tests/test_train_loop.py's CPU test, on the device: a run killed with SIGKILL between checkpoints and
    resumed logs every step's loss bit for bit as an uninterrupted run does (deterministic settings, see
    `deterministic_train`)."""
    steps, common = 16, ["train.save_every=3"]
    env = {**os.environ, "XMODEL_TEST_STEP_DELAY": "0.25"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(script(full, steps, *common), cwd=REPO, check=True, capture_output=True, timeout=300)
    kill_after = random.Random(os.getpid()).randint(4, 12)
    proc = subprocess.Popen(script(killed, steps, *common), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if max(losses(killed), default=0) >= kill_after:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(killed), default=0) < steps, "the run finished before it was killed"
    res = subprocess.run(script(killed, steps, *common), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout
    assert losses(killed) == losses(full)  # every step's loss, bit for bit


def torchrun(run_dir, steps, *extra) -> dict[int, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
           str(29500 + random.randint(0, 2000)), "-m", "tests.cuda.deterministic_train", str(run_dir), str(steps),
           f"train.device={DEVICE}", *extra]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return losses(run_dir)


def test_fsdp2_under_torchrun_matches_one_process(tmp_path):
    """FSDP2 (`train.parallel=fsdp`) in bf16 through torchrun: on CUDA with the mixed-precision policy (bf16
    all-gathers, fp32 reduction) against plain bf16 autocast in one process; then resumed under torchrun."""
    steps, common = 6, ["train.batch_tokens=256", "train.precision=bf16"]
    subprocess.run(script(tmp_path / "one", steps, *common), cwd=REPO, check=True, capture_output=True, timeout=300)
    single = losses(tmp_path / "one")
    sharded = torchrun(tmp_path / "fsdp", steps, *common, "train.parallel=fsdp")
    assert single.keys() == sharded.keys() == set(range(1, steps + 1))
    for s in single:
        assert abs(single[s] - sharded[s]) <= 1e-2 * abs(single[s]), (s, single[s], sharded[s])
    more = torchrun(tmp_path / "fsdp", steps + 2, *common, "train.parallel=fsdp")
    assert len(more) == steps + 2 and all(more[s] == sharded[s] for s in sharded)
    state = json.loads(sorted((tmp_path / "fsdp" / "checkpoints").glob("step_*"))[-1]
                       .joinpath("trainer_state.json").read_text())["state"]
    assert state["step"] == steps + 2


def test_fsdp2_policy_gathers_layers_in_bf16(tmp_path):
    """In one process with a one-rank group: under FSDP2 in bf16 the decoder layers compute with bf16 weights on
    CUDA (fp32 on the CPU, where nothing changes) and the root unit with fp32 ones; the sharded gradients are
    fp32 either way."""
    import torch.distributed as dist

    from xmodel import XmodelForCausalLM
    from xmodel.train.distributed import DistEnv, wrap_model

    from ..conftest import small_config

    backend = "nccl" if ON_CUDA else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        device = torch.device(DEVICE)
        torch.manual_seed(0)
        model = XmodelForCausalLM(small_config()).to(device)
        seen = {}

        def record(name):
            def hook(mod, args, out):
                seen.setdefault(name, mod.weight.dtype)  # the weight the forward used (unsharded under FSDP2)
            return hook

        model.model.layers[0].self_attn.q_proj.register_forward_hook(record("layer"))
        model.model.embed_tokens.register_forward_hook(record("root"))
        wrapped = wrap_model(model, "fsdp", DistEnv(device=device), torch.bfloat16)
        ids = torch.randint(3, 200, (2, 32), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = wrapped(input_ids=ids, labels=ids, return_logits=False).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert seen == {"layer": torch.bfloat16 if ON_CUDA else torch.float32, "root": torch.float32}
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in wrapped.parameters())
    finally:
        dist.destroy_process_group()
