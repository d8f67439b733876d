"""Typed configuration: dataclass sections, filled from presets, YAML files and dotted overrides.

One mechanism for the whole project. A section is a dataclass (or, for the model, `XmodelConfig`, whose own
declared fields form the section); values are checked against the annotated types with one-line errors that
name the field (``model.hidden_size: expected int, got 'abc'``), then each section's ``validate()`` runs.

Order of precedence, lowest first: dataclass defaults < preset < YAML file < command-line overrides.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from ..errors import ConfigError

MISSING = dataclasses.MISSING


def section_fields(cls) -> dict[str, tuple[Any, Any]]:
    """Name → (type, default) of the fields a section class declares."""
    if hasattr(cls, "architecture_fields"):  # XmodelConfig: only its own fields, not PretrainedConfig's
        return cls.architecture_fields()
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out[f.name] = (hints[f.name], default)
    return out


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only what is lossless (int → float, str path → str)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{where}: may not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(c) for c in get_args(tp))
            raise ConfigError(f"{where}: must be one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {coerce(k, key_tp, where): coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) or hasattr(tp, "architecture_fields"):
        return build_section(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def build_section(cls, data: dict | Any, where: str = ""):
    """Build section `cls` from a mapping; unknown keys and bad values raise `ConfigError`."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    fields = section_fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{_join(where, unknown[0])}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, (tp, default) in fields.items():
        if name in data:
            values[name] = coerce(data[name], tp, _join(where, name))
        elif default is MISSING:
            raise ConfigError(f"{_join(where, name)}: required")
    try:
        obj = cls(**values)
        if hasattr(obj, "validate"):
            obj.validate()
    except ConfigError:
        raise
    except Exception as e:  # validators raise ValueError("field: problem"); strict dataclasses wrap it
        cause = e.__cause__ or e
        raise ConfigError(_join(where, str(cause)) if ":" in str(cause) else f"{where}: {cause}") from None
    return obj


def section_to_dict(obj) -> dict:
    """The inverse of `build_section`: plain values, nested sections (also inside lists and maps) as mappings."""
    return {name: _plain(getattr(obj, name)) for name in section_fields(type(obj))}


def _plain(value):
    if dataclasses.is_dataclass(value) or hasattr(value, "architecture_fields"):
        return section_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse_scalar(text: str) -> Any:
    """A command-line value as YAML reads it: 256 → int, 1e-3 → float, true → bool, null → None, [1,2] → list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--model.hidden_size 256`, `--model.hidden_size=256` or `model.hidden_size=256` → {dotted key: value}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        key = arg[2:] if arg.startswith("--") else arg
        if "=" in key:
            key, text = key.split("=", 1)
        else:
            if not arg.startswith("--") or i + 1 >= len(args):
                raise ConfigError(f"{arg}: expected --section.key VALUE or section.key=VALUE")
            i += 1
            text = args[i]
        if "." not in key:
            raise ConfigError(f"{key}: an override names section.key, e.g. --model.hidden_size 256")
        out[key] = parse_scalar(text)
        i += 1
    return out


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {k} is not a section")
    node[keys[-1]] = value


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


RECIPES_DIR = Path(__file__).with_name("recipes")


def recipe_names() -> list[str]:
    """The packaged configs (`--config xmodel-2`): the reports' training recipes."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def config_file(name: str | Path) -> Path:
    """A config file's path: the file itself, or a packaged recipe by name."""
    path = Path(name)
    if not path.exists() and str(name) in recipe_names():
        return RECIPES_DIR / f"{name}.yaml"
    return path


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (or a packaged recipe: {', '.join(recipe_names())})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data
