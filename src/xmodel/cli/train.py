"""`xmodel train`: the stable stage, or a decay branch from any stable checkpoint or released model, on prepared
data."""

from __future__ import annotations

from pathlib import Path

from ..errors import XmodelError
from .common import add_config_args, config_from_args, non_negative_int


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train (stable stage or a decay branch) on prepared data",
        description="Train on shards written by `xmodel data prepare`. The stable stage runs the stable mixture "
                    "with a WSD schedule held at max_lr; `--stage decay --from RUN/checkpoints/step_N` starts a "
                    "decay branch from that checkpoint (model and optimizer) with the decay mixture (SFT data "
                    "mixed in) and the exponential decay starting at N, in its own run folder. `--init-from "
                    "MODEL_DIR` starts either stage from the weights of any model folder (an Xmodel or Llama / "
                    "MiniCPM checkpoint, an `xmodel import` output) with a fresh optimizer; the model section is "
                    "that folder's. Launch with torchrun for DDP/FSDP2 (see docs/TRAINING.md).")
    p.add_argument("--data", required=True, metavar="DIR", help="a directory prepared by `xmodel data prepare`")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (default: data.tokenizer.path)")
    p.add_argument("--preset", default=None, help="model preset (default: the config's, else nano)")
    p.add_argument("--output", metavar="RUN", help="run folder (default runs/<stage>; decay: <stable run>-decay-N)")
    p.add_argument("--stage", choices=["stable", "decay"], default="stable")
    p.add_argument("--from", dest="branch_from", metavar="CHECKPOINT", help="stable checkpoint a decay branch starts "
                                                                            "from")
    p.add_argument("--init-from", metavar="MODEL_DIR",
                   help="start from this model folder's weights (fresh optimizer, step 0); with --stage decay, a "
                        "decay stage of a released model. Resuming the run continues it, it does not initialise "
                        "again")
    p.add_argument("--warmup-steps", type=non_negative_int, metavar="N",
                   help="linear LR warmup over N steps (= --train.schedule.warmup_steps; a fresh optimizer on "
                        "pretrained weights wants a short one)")
    p.add_argument("--resume", default="auto", help="auto (newest valid checkpoint of the run folder, default), "
                                                    "none, or a checkpoint path")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the schedule, batch plan or seed differ from the checkpoint's (the "
                        "change is logged and recorded in config.json and the checkpoints); without it such a "
                        "resume is refused")
    p.add_argument("--no-progress", action="store_true")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.run import run_stage

    if args.warmup_steps is not None:
        args.overrides = [*args.overrides, "--train.schedule.warmup_steps", str(args.warmup_steps)]
    args.init_from = args.init_from or configured_init_from(args)
    if args.init_from:
        cfg = init_from_config(args)
    else:
        cfg = config_from_args(args, args.preset)
        if cfg.preset is None:  # no preset named anywhere: nano's shape under the file's own model values
            cfg = config_from_args(args, "nano")
            print("no preset named (--preset or `preset:` in the config): the model starts from nano's shape")
    tokenizer = args.tokenizer or cfg.data.tokenizer.path
    if not tokenizer and args.init_from and (Path(args.init_from) / "tokenizer.json").is_file():
        tokenizer = args.init_from  # a released model's own tokenizer
    if not tokenizer:
        raise XmodelError("no tokenizer: pass --tokenizer DIR or set data.tokenizer.path")
    if not Path(tokenizer).is_dir():
        raise XmodelError(f"{tokenizer}: tokenizer directory not found")
    branch_from = Path(args.branch_from) if args.branch_from else None
    if args.init_from and branch_from is not None:
        raise XmodelError("--init-from and --from: a decay branch starts from one of them, not both")
    if args.stage == "decay" and branch_from is None and not args.init_from:
        raise XmodelError("--stage decay needs --from RUN/checkpoints/step_N or --init-from MODEL_DIR")
    if args.stage == "stable" and branch_from is not None:
        raise XmodelError("--from starts a decay branch: add --stage decay")
    if branch_from is not None and not (branch_from / "MANIFEST.json").is_file():
        raise XmodelError(f"{branch_from}: not a checkpoint directory (no MANIFEST.json)")
    output = args.output or (f"{branch_from.parent.parent}-decay-{int(branch_from.name.split('_')[1])}"
                             if branch_from else f"runs/{args.stage}")
    if branch_from is not None and Path(output).resolve() == branch_from.parent.parent.resolve():
        raise XmodelError("--output: a decay branch gets its own run folder, not the stable run's")
    if not gives_data_section(args):  # train on the mixture the directory was prepared with
        cfg.data = prepared_data_config(args.data)
    result = run_stage(cfg, args.data, tokenizer, output, stage=args.stage, branch_from=branch_from,
                       resume=args.resume, init_from=args.init_from,
                       allow_config_change=args.allow_config_change,
                       progress=not args.no_progress)
    print(f"run folder: {result.run_dir}  (step {result.step}, held-out loss "
          f"{result.eval_loss:.4f}, last checkpoint {result.last_checkpoint})")
    if result.stopped_early:
        raise XmodelError(result.stopped_early)
    return 0


def init_from_config(args):
    """The config of a run that starts from a model folder: the folder's model section under the model values
    the user gave (config file, --model.*), which may not change a shape."""
    from ..config import load_config
    from ..config.core import section_to_dict
    from ..train.init_from import check_same_shape, source_model_config

    if args.preset:
        raise XmodelError("--preset and --init-from: the model's shape comes from the --init-from folder")
    base = section_to_dict(source_model_config(args.init_from))
    cfg = load_config(yaml_path=args.config, overrides=args.overrides, model_base=base)
    check_same_shape(args.init_from, cfg.model)
    return cfg


def _yaml(args) -> dict:
    from ..config.core import read_yaml

    return read_yaml(args.config) if args.config else {}


def configured_init_from(args) -> str | None:
    """`train.init_from` of the config file or a --train.init_from override (what `xmodel import` writes)."""
    from ..config.core import parse_overrides

    dotted = parse_overrides(list(args.overrides))
    return dotted.get("train.init_from") or (_yaml(args).get("train") or {}).get("init_from")


def gives_data_section(args) -> bool:
    from ..config.core import parse_overrides

    return "data" in _yaml(args) or any(k.startswith("data.") for k in parse_overrides(list(args.overrides)))


def prepared_data_config(prepared: str):
    """The data section a directory was prepared with (its mixture, seq_len and sources)."""
    from ..config.core import build_section
    from ..data.config import DataConfig
    from ..data.shards import load_manifest

    return build_section(DataConfig, load_manifest(prepared).config, "data")
