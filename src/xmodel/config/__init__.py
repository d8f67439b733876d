"""The project configuration: one typed `Config` with a section per pipeline stage.

    cfg = load_config(preset="nano", yaml_path="run.yaml", overrides=["--model.hidden_size", "384"])

Later stages add their sections to `Config`; the loader and its checks serve them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.config import DataConfig
from ..errors import ConfigError
from ..model.configuration_xmodel import XmodelConfig
from ..model.presets import PRESETS, preset_values
from ..train.config import TrainConfig
from ..tune.config import TuneConfig
from .core import (build_section, config_file, deep_merge, parse_overrides, read_yaml, recipe_names,
                   section_to_dict, set_dotted)


@dataclass
class Config:
    """A whole run's settings. `preset` names the model shape the `model` values start from."""

    preset: str | None = None
    model: XmodelConfig = field(default_factory=XmodelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)


def load_config(preset: str | None = None, yaml_path: str | Path | None = None,
                overrides: list[str] | dict | None = None, model_base: dict | None = None) -> Config:
    """Defaults < preset < YAML < overrides, checked field by field (`ConfigError` names the field).

    `model_base` (a model section, e.g. a released model's) takes the place of a preset's model values."""
    data: dict = {}
    if yaml_path is not None:
        yaml_path = config_file(yaml_path)
        data = read_yaml(yaml_path)
    if isinstance(overrides, dict):
        dotted = overrides
    else:
        dotted = parse_overrides(list(overrides or []))
    for key, value in dotted.items():
        set_dotted(data, key, value)
    named = data.get("preset")
    if named is not None:
        preset_values(named)  # an unknown name in a file is an error here, not when some later command reads it
        if preset is not None and named != preset and "preset" not in dotted:
            raise ConfigError(f"preset: {yaml_path} names {named!r} but the command names {preset!r}")
    preset = data.get("preset", preset) if preset is None or "preset" in dotted else preset
    if model_base is not None:
        data.pop("preset", None)
        data = deep_merge({"model": dict(model_base)}, data)
    elif preset is not None:
        data["preset"] = preset
        data = deep_merge({"model": preset_values(preset)}, data)
    return build_section(Config, data)


def config_to_dict(cfg: Config) -> dict:
    return section_to_dict(cfg)


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")


__all__ = ["Config", "ConfigError", "PRESETS", "load_config", "config_to_dict", "dump_config", "config_file",
           "recipe_names"]
