"""Pieces several subcommands share: config arguments, model loading, number formatting."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import PRESETS, Config, load_config
from ..errors import XmodelError


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config FILE plus free-form dotted overrides (--model.hidden_size 256)."""
    parser.add_argument("--config", metavar="YAML", help="a YAML config file (sections: model, …)")
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


def require_model_dir(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise XmodelError(f"{path}: no such model directory (or preset: {', '.join(PRESETS)})")
    if not (p / "config.json").is_file():
        raise XmodelError(f"{path}: not a model directory (no config.json)")
    return p


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.23M'; with unit 'B', bytes in binary units."""
    if unit == "B":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or suffix == "TiB":
                return f"{n:.0f} {suffix}" if suffix == "B" else f"{n:.2f} {suffix}"
            n /= 1024
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"
