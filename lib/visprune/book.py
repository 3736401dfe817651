"""Execute the book's chapters with papermill, then render them with Jupyter Book.

``python -m visprune.book`` is what ``make book`` runs:

1. read ``_toc.yml`` and find the notebook chapters (``.ipynb``) in it;
2. execute each with papermill (default parameters, or ``-p name value`` overrides) into a
   staging copy of the book under ``_build/src``, stopping at the first chapter that fails
   (a failed chapter is never rendered as a papermill error page);
3. hide the parameters cells (papermill's injected one and the notebook's own) and show the
   parameters the page was built with as a small table instead;
4. render the staging copy with ``jupyter-book build`` into ``_build/html``.

A chapter whose notebook, parameters and library code are unchanged since its last successful
execution is not executed again (``--force`` re-executes). The heavy work inside a chapter is
cached separately by the evaluation engine, so a re-execution is fast too.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KERNEL_NAME = "visprune"
STAGING = Path("_build") / "src"
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")


class ChapterError(RuntimeError):
    """A chapter failed to execute; the message names the chapter and the failing cell."""


def repo_root(start: Path | None = None) -> Path:
    """The directory holding ``_toc.yml`` (the book's root), searched upwards from ``start``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "_toc.yml").is_file():
            return candidate
    raise FileNotFoundError(
        f"_toc.yml not found in {here} or any parent directory: run this from the repository "
        "root (the folder with _config.yml and _toc.yml)."
    )


def toc_files(root: Path) -> list[str]:
    """All ``file:`` entries of ``_toc.yml`` (and its root), in reading order, without suffix."""
    import yaml  # installed with jupyter-book

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def chapter_notebooks(root: Path) -> list[Path]:
    """The notebook chapters listed in ``_toc.yml`` (paths relative to ``root``)."""
    notebooks = []
    for entry in toc_files(root):
        path = Path(entry)
        nb = path if path.suffix == ".ipynb" else path.with_suffix(".ipynb")
        if (root / nb).is_file():
            notebooks.append(nb)
    return notebooks


def parse_value(text: str) -> Any:
    """A ``-p`` value: a Python literal if it parses as one (numbers, lists, None), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_parameters(nb_path: Path) -> dict[str, Any]:
    """The defaults in a notebook's ``parameters`` cell (papermill's own inspection)."""
    import papermill

    info = papermill.inspect_notebook(str(nb_path))
    return {name: parse_value(spec["default"]) for name, spec in info.items()}


def check_parameter_types(chapter: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Reject an override whose type does not fit the chapter's default (before any execution).

    An int is accepted where the default is a float, anything where the default is None, and
    None where the default is a path-like string (meaning "the profile's default").
    """
    for name, value in overrides.items():
        default = defaults.get(name)
        if default is None or value is None:
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(default, bool) and isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float))
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple))
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(
                f"{chapter}: parameter {name!r} expects {type(default).__name__} (like {default!r}), "
                f"got {type(value).__name__} {value!r}"
            )


def library_fingerprint(root: Path) -> str:
    """A hash of the library's source, so a chapter re-executes when the code it calls changes."""
    digest = hashlib.sha256()
    for path in sorted((root / "lib" / "visprune").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _stamp(nb_path: Path, parameters: dict[str, Any], lib_hash: str) -> str:
    digest = hashlib.sha256()
    digest.update(nb_path.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    digest.update(lib_hash.encode())
    return digest.hexdigest()


def _parameters_table(parameters: dict[str, Any]) -> str:
    rows = "\n".join(f"| `{name}` | `{value!r}` |" for name, value in parameters.items())
    return (
        "```{admonition} Parameters this page was built with\n:class: note\n\n"
        f"| parameter | value |\n|---|---|\n{rows}\n\n"
        "Re-run with other values: `python -m visprune.book --chapter "
        "<name> -p <parameter> <value>` (see the introduction).\n```"
    )


def present_parameters(executed: Path, parameters: dict[str, Any]) -> None:
    """Hide the parameters cells of an executed notebook and insert a parameters table.

    Every other code cell gets Jupyter Book's ``hide-input`` tag (its code folds behind a
    "Show code cell source" toggle, its outputs stay visible), unless the chapter tags it
    ``show-input`` or already chose how to show it.
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    insert_at = None
    chosen = {"remove-cell", "remove-input", "hide-input", "hide-cell", "show-input"}
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            insert_at = index + 1
        elif cell.cell_type == "code" and not chosen & set(tags):
            tags.append("hide-input")
    if insert_at is not None:
        table = nbformat.v4.new_markdown_cell(_parameters_table(parameters))
        table.metadata["tags"] = ["parameters-table"]
        nb.cells.insert(insert_at, table)
    nbformat.write(nb, executed)


def execute_chapter(
    root: Path, nb: Path, overrides: dict[str, Any], force: bool = False, kernel: str = KERNEL_NAME
) -> bool:
    """Execute one chapter into the staging book. Returns False when it was up to date."""
    import papermill

    source = root / nb
    defaults = notebook_parameters(source)
    check_parameter_types(str(nb), defaults, overrides)
    parameters = {**defaults, **overrides}
    target = root / STAGING / nb
    stamp_file = target.with_suffix(".stamp")
    stamp = _stamp(source, parameters, library_fingerprint(root))
    if not force and target.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.ipynb")
    try:
        papermill.execute_notebook(
            str(source),
            str(partial),
            parameters=overrides,
            kernel_name=kernel,
            cwd=str(source.parent),
            progress_bar=False,
            log_output=False,
        )
    except papermill.PapermillExecutionError as err:
        raise ChapterError(
            f"chapter {nb} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"The partly executed notebook is at {partial}; the book was not rendered."
        ) from err
    present_parameters(partial, parameters)
    partial.replace(target)
    stamp_file.write_text(stamp)
    return True


def stage_static_files(root: Path) -> None:
    """Copy the book's configuration and non-notebook pages into the staging book."""
    staging = root / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(root / name, staging / name)
    for entry in toc_files(root):
        path = Path(entry)
        for suffix in (".md", ".rst"):
            page = path if path.suffix == suffix else path.with_suffix(suffix)
            if (root / page).is_file():
                (staging / page).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / page, staging / page)
    figures = root / "chapters" / "figures"
    if figures.is_dir():
        shutil.copytree(figures, staging / "chapters" / "figures", dirs_exist_ok=True)


def render(root: Path) -> Path:
    """Render the staging book with Jupyter Book into ``_build/html``; returns that path.

    The configuration and the non-notebook pages are copied into the staging book first, so it
    always renders the current ones beside the executed chapters.
    """
    stage_static_files(root)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book"]
    command += ["build", str(root / STAGING), "--path-output", str(root), "--all"]
    subprocess.run(command, check=True)
    return root / "_build" / "html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visprune.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapter", action="append", default=[],
                        help="execute only this chapter (name or path; repeatable); others are left as they are")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a chapter parameter (Python literal or string); repeatable")
    parser.add_argument("--force", action="store_true", help="re-execute even if a chapter is up to date")
    parser.add_argument("--no-render", action="store_true", help="execute the chapters but do not render HTML")
    parser.add_argument("--render-only", action="store_true",
                        help="render the chapters as last executed, without executing anything")
    parser.add_argument("--kernel", default=KERNEL_NAME, help=f"Jupyter kernel name (default {KERNEL_NAME})")
    args = parser.parse_args(argv)

    root = repo_root()
    if args.render_only:
        stage_static_files(root)
        print(f"book rendered: {render(root) / 'index.html'}")
        return 0
    notebooks = chapter_notebooks(root)
    if args.chapter:
        wanted = {Path(c).stem for c in args.chapter}
        missing = wanted - {nb.stem for nb in notebooks}
        if missing:
            print(f"error: --chapter {sorted(missing)} is not a notebook chapter in _toc.yml; "
                  f"the chapters are {[nb.stem for nb in notebooks]}", file=sys.stderr)
            return 2
        notebooks = [nb for nb in notebooks if nb.stem in wanted]
    overrides = {name: parse_value(value) for name, value in args.parameter}

    # An override must name a parameter of every chapter it is aimed at (--chapter), or of at
    # least one chapter when the whole book runs (then it applies where the parameter exists).
    chapter_defaults = {nb: notebook_parameters(root / nb) for nb in notebooks}
    for name in overrides:
        having = [nb for nb, d in chapter_defaults.items() if name in d]
        if (args.chapter and len(having) < len(notebooks)) or not having:
            lacking = [nb.stem for nb in notebooks if nb not in having]
            print(f"error: -p {name}: not a parameter of chapter(s) {lacking}; their parameters are "
                  f"{ {nb.stem: sorted(chapter_defaults[nb]) for nb in notebooks if nb.stem in lacking} }",
                  file=sys.stderr)
            return 2

    for nb in notebooks:
        try:
            check_parameter_types(str(nb), chapter_defaults[nb], {k: v for k, v in overrides.items() if k in chapter_defaults[nb]})
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    stage_static_files(root)
    for nb in notebooks:
        chapter_overrides = {k: v for k, v in overrides.items() if k in chapter_defaults[nb]}
        start = time.perf_counter()
        try:
            ran = execute_chapter(root, nb, chapter_overrides, force=args.force, kernel=args.kernel)
        except (ChapterError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        state = f"executed in {time.perf_counter() - start:.0f} s" if ran else "up to date"
        print(f"{nb}: {state}", flush=True)
    if not args.no_render:
        html = render(root)
        print(f"book rendered: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
