"""Pieces several subcommands share: config arguments, model loading, number formatting."""

from __future__ import annotations

import argparse

from ..config import PRESETS, Config, load_config
from ..inference.runtime import require_model_dir  # noqa: F401  (shared by the subcommands; defined below the CLI)
from ..units import human  # noqa: F401  (likewise)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config FILE plus free-form dotted overrides (--model.hidden_size 256)."""
    parser.add_argument("--config", metavar="YAML", help="a YAML config file (sections: model, data, train, tune), "
                                                          "or a packaged recipe: xmodel-2, xmodel-lm (the reports' "
                                                          "training configs, assumptions stated in each)")
    parser.set_defaults(accepts_overrides=True)
    parser.epilog = ((parser.epilog or "") + "\nAny config field can be overridden as --section.key VALUE, "
                     "e.g. --model.num_hidden_layers 12.").strip()


def add_data_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", metavar="DIR",
                        help="the data root (default: $XMODEL_DATA_ROOT, else shared/data beside the checkout)")


def _int_at_least(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0 (a bad value is argparse's one-line error)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer ≥ 0")


def config_from_args(args, preset: str | None = None) -> Config:
    return load_config(preset=preset, yaml_path=args.config, overrides=args.overrides)


def is_preset(name: str) -> bool:
    return name in PRESETS
