"""`tests.train_script` under deterministic settings, for the CUDA kill/resume and torchrun checks.

    python -m tests.cuda.deterministic_train RUN_DIR STEPS [key=value overrides…] [--resume auto|none]

Deterministic: cuBLAS with a fixed workspace (CUBLAS_WORKSPACE_CONFIG), `torch.use_deterministic_algorithms`,
no cuDNN autotuning, and SDPA's math backend (the fused attention backwards may accumulate with atomics). With
XMODEL_TEST_STEP_DELAY=S every optimizer step is followed by an S-second pause, so that a test can kill the
run between two steps on a GPU that would otherwise finish 16 tiny steps before it looks.
"""

import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

torch.use_deterministic_algorithms(True, warn_only=True)
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False


def main(argv):
    from xmodel.train import trainer

    from .. import train_script

    delay = float(os.environ.get("XMODEL_TEST_STEP_DELAY", "0") or 0)
    if delay > 0:
        step = trainer.train_step

        def paused_step(*args, **kwargs):
            out = step(*args, **kwargs)
            time.sleep(delay)
            return out

        trainer.train_step = paused_step
    with sdpa_kernel([SDPBackend.MATH]):
        train_script.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
