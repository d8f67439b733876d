"""What the CUDA checks share: the device they run on, their marks and the comparison they use.

    pytest -m cuda tests/cuda                                 # on a GPU machine (benchmarks/gpu/run.sh does this)
    XMODEL_CUDA_TESTS_DEVICE=cpu pytest -m cuda tests/cuda    # the same checks on the CPU (the script's dry run)

Without CUDA and without that variable every test here is skipped, so CI stays green on CPU machines. The dry
run exists so that these tests, which CI never runs on a GPU, still run somewhere on every change.
"""

from __future__ import annotations

import os

import pytest
import torch

FORCED = os.environ.get("XMODEL_CUDA_TESTS_DEVICE")
DEVICE: str | None = FORCED or ("cuda" if torch.cuda.is_available() else None)
ON_CUDA = DEVICE is not None and DEVICE.startswith("cuda")

needs_device = pytest.mark.skipif(DEVICE is None, reason="needs CUDA (XMODEL_CUDA_TESTS_DEVICE=cpu runs it on the CPU)")
MARKS = [pytest.mark.cuda, needs_device]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """‖got − ref‖ / ‖ref‖ in fp64 (NaN anywhere gives NaN, which no tolerance passes)."""
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    return float((got - ref).norm() / ref.norm().clamp_min(1e-30))


def assert_close(got: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "") -> None:
    err = rel_err(got, ref)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def sync() -> None:
    if ON_CUDA:
        torch.cuda.synchronize()
