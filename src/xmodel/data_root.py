"""Where the real data lives: one configurable root for every stage.

Precedence: an explicit path (``--data-root``), then the environment variable ``XMODEL_DATA_ROOT``, then the
default ``../shared/data`` relative to the repository checkout (a CI clone sits beside ``shared/``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import XmodelError

ENV_VAR = "XMODEL_DATA_ROOT"
# src/xmodel/data_root.py → repository root is three levels up; the data kit sits beside the checkout.
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve_data_root(explicit: str | os.PathLike | None = None, must_exist: bool = True) -> Path:
    """The data root to use: `explicit`, else $XMODEL_DATA_ROOT, else the checkout's ../shared/data."""
    if explicit:
        root, origin = Path(explicit), "--data-root"
    elif os.environ.get(ENV_VAR):
        root, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        root, origin = DEFAULT_DATA_ROOT, "the default data root"
    root = root.expanduser().resolve()
    if must_exist and not root.is_dir():
        raise XmodelError(f"{root}: no such data directory ({origin}; set --data-root or ${ENV_VAR})")
    return root


def add_data_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", metavar="DIR",
                        help=f"the data kit (default: ${ENV_VAR}, else ../shared/data beside the checkout)")
