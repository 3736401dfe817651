"""The installable wheel (issue 17, item 5; DESIGN.md section 3, "shipped and generated files").

A wheel is built from a copy of the repository's sources (so the build writes nothing into the
checkout), installed *without* ``-e`` into a temporary folder, and run from a temporary working
directory outside the repository with ``PYTHONPATH`` pointing at the installation and
``VISPRUNE_DATA`` at a temporary data folder: the installed package must hold every subpackage
and every shipped file (``py.typed``, the toy checkpoint, the CHAIR tables), be the one that is
imported, and run a small toy POPE run from the command line (the toy world is generated under
``VISPRUNE_DATA``). About 30 s, most of it generating the toy world.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lib" / "visprune"


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _sources(dest: Path) -> Path:
    """A copy of what the build reads (pyproject.toml, README.md, lib/), without build leftovers."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "lib", dest / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return dest


def _shipped_files() -> list[str]:
    """Every file the package ships, relative to ``lib/`` (sources aside): py.typed and assets."""
    files = [p for p in (PACKAGE / "assets").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(p.relative_to(PACKAGE.parent).as_posix() for p in [PACKAGE / "py.typed", *files])


def _subpackages() -> list[str]:
    return sorted(p.parent.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("__init__.py")
                  if "__pycache__" not in p.parts)


def _can_build_offline() -> bool:
    """Whether this environment builds wheels without an isolated (downloaded) build environment:
    setuptools with its own bdist_wheel (70.1 and later), or the ``wheel`` package."""
    from importlib.util import find_spec

    if find_spec("setuptools") is None:
        return False
    import setuptools

    version = tuple(int(part) for part in setuptools.__version__.split(".")[:2] if part.isdigit())
    return version >= (70, 1) or find_spec("wheel") is not None


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The wheel, built and installed into a temporary folder."""
    if not _can_build_offline():
        pytest.skip("building the wheel offline needs setuptools >= 70.1 (or the wheel package): "
                    "pip install 'setuptools>=70.1'")
    base = tmp_path_factory.mktemp("wheel")
    src = _sources(base / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
          "-w", str(base / "dist"), str(src)], cwd=base)
    [wheel] = sorted((base / "dist").glob("visprune-*.whl"))
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(base / "site"), str(wheel)],
         cwd=base)
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VISPRUNE_DEBUG")}
    env.update(PYTHONPATH=str(base / "site"), VISPRUNE_DATA=str(base / "data"), OMP_NUM_THREADS="2")
    return {"wheel": wheel, "site": base / "site", "work": work, "data": base / "data", "env": env}


def test_wheel_holds_every_subpackage_and_shipped_file(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    missing = [f for f in _shipped_files() if f not in names]
    assert not missing, f"shipped files missing from the wheel (pyproject.toml package-data): {missing}"
    missing = [f"{pkg}/__init__.py" for pkg in _subpackages() if f"{pkg}/__init__.py" not in names]
    assert not missing, f"subpackages missing from the wheel (pyproject.toml packages.find): {missing}"
    site = installed["site"]
    assert (site / "visprune" / "py.typed").is_file()
    assert (site / "visprune" / "assets" / "toy-llava" / "model.safetensors").stat().st_size > 1_000_000


def test_installed_package_is_imported_and_finds_its_files(installed):
    code = ("import visprune, visprune._paths as p; print(visprune.__file__); print(p.repo_root()); "
            "print(p.asset(p.TOY_MODEL)); print(p.data_root())")
    out = _run([sys.executable, "-c", code], cwd=installed["work"], env=installed["env"]).stdout.splitlines()
    site = installed["site"].resolve()
    assert Path(out[0]).resolve().is_relative_to(site), f"imported {out[0]}, not the installed wheel under {site}"
    assert out[1] == "None"  # not a checkout
    assert Path(out[2]).resolve().is_relative_to(site)
    assert Path(out[3]) == installed["data"]


def test_installed_wheel_runs_a_toy_pope_run(installed):
    """``python -m visprune run`` on the toy profile: the world is generated under VISPRUNE_DATA."""
    repo_data_before = sorted(p.name for p in (REPO / "data").iterdir()) if (REPO / "data").is_dir() else []
    done = _run([sys.executable, "-m", "visprune", "run", "--dataset", "pope-random", "--method", "scope",
                 "--k", "16", "--n-samples", "12", "--device", "cpu", "--no-progress"],
                cwd=installed["work"], env=installed["env"])
    header, row = done.stdout.strip().splitlines()[-2:]
    assert "accuracy" in header and "f1" in header, done.stdout
    assert row.split()[:3] == ["pope-random", "scope-k16", "12"], done.stdout
    assert (installed["data"] / "toyworld" / "manifest.json").is_file()
    assert (installed["data"] / "results").is_dir()
    repo_data_after = sorted(p.name for p in (REPO / "data").iterdir()) if (REPO / "data").is_dir() else []
    assert repo_data_after == repo_data_before  # nothing was written into the checkout
