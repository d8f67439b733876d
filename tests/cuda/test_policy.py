"""Which FSDP2 mixed-precision policy the trainer asks for (no GPU needed: this runs everywhere)."""

import torch

from xmodel.train.distributed import DistEnv, fsdp_mixed_precision


def test_bf16_on_cuda_gets_bf16_gathers_and_fp32_reduction():
    policy = fsdp_mixed_precision(DistEnv(device=torch.device("cuda", 0)), torch.bfloat16)
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
    assert policy.cast_forward_inputs is False  # the residual stream keeps its dtype (fp32 under autocast)


def test_cpu_and_fp32_keep_their_numerics():
    assert fsdp_mixed_precision(DistEnv(device=torch.device("cpu")), torch.bfloat16) is None
    assert fsdp_mixed_precision(DistEnv(device=torch.device("cuda", 0)), None) is None
