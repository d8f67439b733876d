"""benchmarks/gpu/run.sh — the one command a lent GPU machine runs — in its CPU dry run: every step runs on tiny
shapes and the JSON has every section, so the script and the CUDA tests it runs (tests/cuda, on the CPU here)
cannot rot between GPU loans. `--quick` leaves compilation and the subprocess tests out (about a minute on two
cores); `bash benchmarks/gpu/run.sh --dry-run` runs everything (a few minutes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu" / "run.sh"
GPU_PATH_MODULES = ["xmodel.model", "xmodel.train.trainer", "xmodel.train.distributed", "xmodel.train.checkpoint",
                    "xmodel.inference.engine", "xmodel.inference.runtime", "xmodel.inference.server"]


def run_script(*args, out: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XMODEL_CUDA_TESTS_DEVICE"}
    env.update(OUT=str(out), PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_script_refuses_unknown_arguments(tmp_path):
    res = run_script("--no-such-flag", out=tmp_path)
    assert res.returncode == 2 and "unknown argument --no-such-flag" in res.stderr


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "out"
    res = run_script("--dry-run", "--quick", out=out)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    record = json.loads((out / "gpu-results.json").read_text())
    assert record["mode"] == "dry-run-quick"
    steps = {s["name"]: s["status"] for s in record["steps"]}
    assert steps == {"wheels": "skipped", "install": "skipped", "env": "ok", "matmul": "ok", "tests": "ok",
                     "train_ac_off": "ok", "train_ac_on": "ok", "trial": "ok", "decode": "ok",
                     "decode_compiled": "skipped"}, steps
    assert all(record["env"]["modules"][m] == "ok" for m in GPU_PATH_MODULES), record["env"]["modules"]
    assert record["matmul"]["bf16_matmul_flops"] > 0 and record["matmul"]["copy_bytes_per_s"] > 0
    tests = record["tests"]
    assert tests["passed"] >= 6 and tests["failed"] == tests["error"] == 0, tests
    assert tests["tests"]["test_train.test_trainer_matches_a_cpu_run[fp32-eager]"]["outcome"] == "passed"
    for ac in ("off", "on"):
        train = record["train_1p2b"][ac]
        assert train["activation_checkpointing"] == (ac == "on")
        assert train["peak_source"] == "given" and train["peak_flops"] == record["matmul"]["bf16_matmul_flops"]
        (variant,) = train["variants"].values()
        assert variant["tokens_per_s"] > 0 and 0 < variant["mfu"]
    trial = record["trial"]["variants"]["compile off"]
    assert trial["tokens_per_s"] > 0 and trial["trials_per_gpu_hour"] > 0 and trial["startup_s"] >= 0
    assert record["trial"]["budget_tokens"] == 16_777_216
    decode = record["decode"]["variants"]
    assert {v["batch"] for v in decode.values()} == {1, 4} and all(v["tokens_per_s"] > 0 for v in decode.values())
    table = (out / "gpu-results.md").read_text()
    assert "trials/GPU-hour" in table and "activation checkpointing on" in table and "| tests | ok |" in table
    assert {p.name for p in out.iterdir()} == {"gpu-results.json", "gpu-results.md", "run.log", "junit.xml"}
