"""Run the trainer on the synthetic source from a subprocess (for kill/resume and torchrun tests).

    python -m tests.train_script RUN_DIR STEPS [key=value overrides…] [--resume auto|none]
"""

import sys
import warnings

from xmodel.train.start import Start
from xmodel.train.trainer import train

from .train_helpers import PatternSource, tiny_train_config

warnings.filterwarnings("ignore")


def main(argv):
    run_dir, steps, *rest = argv
    resume = "auto"
    if "--resume" in rest:
        i = rest.index("--resume")
        resume = rest[i + 1]
        rest = rest[:i] + rest[i + 2:]
    overrides = dict(kv.split("=", 1) for kv in rest)
    from xmodel.config.core import parse_scalar

    cfg = tiny_train_config(int(steps), **{k: parse_scalar(v) for k, v in overrides.items()})
    result = train(cfg.model, cfg.train, PatternSource(cfg.model.vocab_size, 32), run_dir,
                   start=Start(resume=resume), progress=False, log=lambda m: print(m, flush=True))
    print(f"done step={result.step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
