"""Where Albumforge's data lives: the shipped ``prompts/`` and ``site/``, and the user cache.

In a checkout (an editable install, a ``ray job submit --working-dir .`` job, or plain
``python -m`` from the repository root) the data is the top-level ``prompts/`` and
``site/`` folders beside this package. A wheel ships the same folders inside this
package (``albumforge/prompts``, ``albumforge/site``: the ``package-dir`` mapping in
``pyproject.toml``). ``data_dir`` finds either, so no other module computes a data path.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
DATA_DIRS = ("prompts", "site")  # shipped with the code; mapped into this package by pyproject.toml


def data_dir(name: str) -> Path:
    """The folder ``prompts`` or ``site``: inside the installed package, else in the checkout."""
    if name not in DATA_DIRS:
        raise ValueError(f"data_dir: unknown data folder {name!r} (expected one of {DATA_DIRS})")
    installed, checkout = _PACKAGE / name, _PACKAGE.parent / name
    for candidate in (installed, checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"albumforge data folder {name!r} is missing: looked in {installed} (wheel install) "
                            f"and {checkout} (checkout); reinstall the package")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/albumforge``, else ``~/.cache/albumforge`` (never inside site-packages)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores relative paths
    return base / "albumforge"
