"""Where shipped files are read and generated files are written (DESIGN.md section 3).

Two kinds of files, kept apart so that an installed wheel works as well as a checkout:

- **Shipped** (read-only, package data inside ``visprune/assets``): the toy LLaVA checkpoint
  (``toy-llava/``) and the CHAIR synonym tables (``chair/``). Read with :mod:`importlib.resources`,
  so they are found wherever the package is installed.
- **Generated** (written by runs): the toy world and the run caches, under :func:`data_root`:
  ``$VISPRUNE_DATA`` when set; else the ``data/`` folder of the repository when the package runs
  from a checkout (``pip install -e .``); else ``$XDG_CACHE_HOME/visprune`` (``~/.cache/visprune``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["asset", "data_root", "repo_root", "TOY_MODEL", "COCO_SYNONYMS", "TOY_SYNONYMS"]

#: Shipped files, relative to ``visprune/assets``.
TOY_MODEL = "toy-llava"
COCO_SYNONYMS = "chair/coco_synonyms.txt"
TOY_SYNONYMS = "chair/toy_synonyms.txt"


def asset(relpath: str) -> Path:
    """The path of a shipped file or folder (``relpath`` under ``visprune/assets``).

    Raises FileNotFoundError naming the file when the installation lacks it.
    """
    root = resources.files("visprune") / "assets"
    path = Path(str(root.joinpath(*relpath.split("/"))))
    if not path.exists():
        raise FileNotFoundError(
            f"{relpath}: a shipped file of visprune is missing from {Path(str(root))}; reinstall the package"
        )
    return path


def repo_root() -> Path | None:
    """The checkout holding this package (the folder with ``lib/visprune`` and ``pyproject.toml``),
    or None when the package is installed elsewhere (a wheel)."""
    here = Path(__file__).resolve().parent
    root = here.parents[1]
    if here.parent.name == "lib" and (root / "pyproject.toml").is_file():
        return root
    return None


def data_root() -> Path:
    """Where generated files go: ``$VISPRUNE_DATA``, a checkout's ``data/``, or the user cache."""
    env = os.environ.get("VISPRUNE_DATA")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    if root is not None:
        return root / "data"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "visprune"
