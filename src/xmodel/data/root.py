"""The one configurable data root that every data path is resolved against.

Precedence: an explicit value (``--data-root``) > the environment variable ``XMODEL_DATA_ROOT`` > a
``shared/data`` folder beside the repository checkout. "Beside the checkout" is looked for at the checkout's
parent and then at each of its ancestors (so a clone at ``X/xmodel`` finds ``X/shared/data``, and a worktree
at ``X/wt/name`` finds it too), and finally beside the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import XmodelError

ENV_VAR = "XMODEL_DATA_ROOT"


def _checkout_root() -> Path | None:
    """The repository checkout this package runs from (editable install / PYTHONPATH), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "xmodel").is_dir():
            return parent
    return None


def default_candidates() -> list[Path]:
    """Where the default data root is looked for, in order."""
    starts = [p for p in (_checkout_root(), Path.cwd().resolve()) if p is not None]
    out: list[Path] = []
    for start in starts:
        for parent in start.parents:
            cand = parent / "shared" / "data"
            if cand not in out:
                out.append(cand)
    return out


def data_root(value: str | os.PathLike | None = None) -> Path:
    """The data root as an absolute path: `value` > $XMODEL_DATA_ROOT > ``../shared/data`` beside the checkout.

    Raises a one-line `XmodelError` naming what was tried when the folder does not exist.
    """
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise XmodelError(f"--data-root {value}: no such directory")
        return path.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise XmodelError(f"{ENV_VAR}={env}: no such directory")
        return path.resolve()
    candidates = default_candidates()
    for cand in candidates:
        if cand.is_dir():
            return cand
    tried = candidates[0] if candidates else Path("../shared/data")
    raise XmodelError(f"no data root: {tried} does not exist; pass --data-root DIR or set {ENV_VAR}")


def resolve_path(path: str | os.PathLike, root: Path) -> Path:
    """An absolute path as is; a relative one under the data root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p
