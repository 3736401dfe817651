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

Every bad input is refused before any kernel starts, in one line on stderr with exit status 2:
an unknown chapter or parameter, a ``-p`` without its value, a value its parameter's rule
(:data:`visprune.book.chapters.PARAMETER_RULES`) does not accept, a build folder that is a file or not
writable, a kernel that is not installed. Ctrl-C stops with exit status 130; the chapters finished
so far are kept, so the same command resumes where it stopped.

Length: over 400 lines because one build is one flow (parameters checked against every
chapter before anything runs, execution with stamps, staging, rendering) behind one command line.
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
BUILD = Path("_build")
STAGING = BUILD / "src"
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
INTERRUPTED = "interrupted; rerun the same command to resume"


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
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def notebook_parameters(nb_path: Path) -> dict[str, Any]:
    """The defaults in a notebook's ``parameters`` cell (papermill's own inspection)."""
    import papermill

    info = papermill.inspect_notebook(str(nb_path))
    return {name: parse_value(spec["default"]) for name, spec in info.items()}


def check_parameter_types(defaults: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Reject an override whose type does not fit the chapter's default (before any execution).

    The fallback for a parameter without a rule in :data:`visprune.book.chapters.PARAMETER_RULES`
    (every chapter of this book has one for each; tests/test_book.py checks it). An int is
    accepted where the default is a float, anything where the default is None, and None anywhere.
    Raises ValueError ``"<name>: expected ..., got ..."``.
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
                f"{name}: expected {type(default).__name__} (like the default {default!r}), "
                f"got {type(value).__name__} {value!r}"
            )


def as_lists(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with tuples given as lists (a chapter may append to a list parameter)."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in overrides.items()}


def check_overrides(nb: Path | str, defaults: dict[str, Any], overrides: dict[str, Any],
                    base: Path | None = None) -> None:
    """Check a chapter's overrides by value before any kernel starts.

    Each override must pass its parameter's rule (:func:`visprune.book.chapters.check_parameters`;
    the type check above for a parameter without one), and the parameters that go together must
    agree. ``base`` is the folder the chapter runs in (relative paths are read from there).
    Raises ValueError (FileNotFoundError for a missing input folder) with one line,
    ``"-p <name>: ... (chapter <name>)"``.
    """
    from visprune.book import chapters

    chapter = Path(nb).stem
    try:
        unruled = {k: v for k, v in overrides.items() if chapters.parameter_rule(k, chapter) is None}
        check_parameter_types(defaults, unruled)
        chapters.check_parameters({**defaults, **overrides}, chapter, changed=list(overrides), base=base)
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"-p {err} (chapter {chapter})") from None


def check_build_folders(root: Path, notebooks: list[Path], render: bool) -> None:
    """The folders the book writes (``_build``, its staging copy, ``_build/html`` when rendering)
    must be writable folders or creatable; raises ValueError naming the first that is not."""
    from visprune.book.chapters import Folder

    folders = [root / BUILD, root / STAGING, *sorted({(root / STAGING / nb).parent for nb in notebooks})]
    folders += [root / BUILD / "html"] if render else []
    for folder in folders:
        problem = Folder("output", "").problem(str(folder))
        if problem is not None:
            raise ValueError(f"build folder: {problem}; the book is built under {root / BUILD}")


def check_kernel(name: str) -> None:
    """The Jupyter kernel must be installed; raises ValueError naming it and the installed ones."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        manager.get_kernel_spec(name)
    except NoSuchKernel:
        raise ValueError(f"--kernel {name}: no Jupyter kernel of that name is installed (installed: "
                         f"{', '.join(sorted(manager.find_kernel_specs())) or 'none'}); `make setup` "
                         f"registers {KERNEL_NAME!r}") from None


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


def _kernel_manager_logging_to(log_file: Path) -> type:
    """A kernel manager class whose kernel writes its own stderr (start-up warnings, the noise of
    a kernel stopped by Ctrl-C) to ``log_file`` instead of the terminal. Cell outputs and errors
    travel over Jupyter's messaging, so a failing chapter is still reported in full."""
    from jupyter_client import AsyncKernelManager

    class KernelManagerWithLog(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            with open(log_file, "ab") as log:  # the kernel process keeps its own copy of the file
                await super().start_kernel(stderr=log, **kw)

    return KernelManagerWithLog


def execute_chapter(
    root: Path, nb: Path, overrides: dict[str, Any], force: bool = False, kernel: str = KERNEL_NAME
) -> bool:
    """Execute one chapter into the staging book. Returns False when it was up to date.

    The kernel's own log goes to ``<chapter>.kernel.log`` beside the staged chapter. Ctrl-C, in
    this process or in the kernel, raises KeyboardInterrupt; the staged chapter and its stamp are
    then left as they were, so the next run executes it again.
    """
    import papermill
    from nbclient.exceptions import DeadKernelError

    source = root / nb
    defaults = notebook_parameters(source)
    overrides = as_lists(overrides)
    check_overrides(nb, defaults, overrides, base=source.parent)
    parameters = {**defaults, **overrides}
    target = root / STAGING / nb
    stamp_file = target.with_suffix(".stamp")
    stamp = _stamp(source, parameters, library_fingerprint(root))
    if not force and target.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.ipynb")
    kernel_log = target.with_suffix(".kernel.log")
    kernel_log.write_text("")
    try:
        papermill.execute_notebook(
            str(source),
            str(partial),
            parameters=overrides,
            kernel_name=kernel,
            cwd=str(source.parent),
            progress_bar=False,
            log_output=False,
            kernel_manager_class=_kernel_manager_logging_to(kernel_log),
        )
    except DeadKernelError as err:
        raise ChapterError(f"chapter {nb}: its kernel stopped ({str(err).strip() or 'no reason given'}); "
                           f"the kernel's own messages are in {kernel_log}") from err
    except papermill.PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel too
            raise KeyboardInterrupt from None
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
    # its own session: Ctrl-C reaches this process only, which stops the build (exit status 130)
    subprocess.run(command, check=True, start_new_session=True)
    return root / "_build" / "html"


class _UsageError(Exception):
    """A command-line mistake argparse found; reported in one line (no usage block)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block and exit
        if "-p/--parameter" in message and "expected 2 arguments" in message:
            message = "-p needs a parameter name and a value, e.g. -p n_samples 100"
        raise _UsageError(f"{message} (python -m visprune.book --help lists the options)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m visprune.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapter", action="append", default=[],
                        help="execute only this chapter (name or path; repeatable); others are left as they are")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a chapter parameter (Python literal or string); repeatable")
    parser.add_argument("--force", action="store_true", help="re-execute even if a chapter is up to date")
    parser.add_argument("--no-render", action="store_true", help="execute the chapters but do not render HTML")
    parser.add_argument("--render-only", action="store_true",
                        help="render the chapters as last executed, without executing anything")
    parser.add_argument("--kernel", default=KERNEL_NAME, help=f"Jupyter kernel name (default {KERNEL_NAME})")
    return parser


def _error(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _render(root: Path) -> int:
    try:
        html = render(root)
    except subprocess.CalledProcessError as err:
        return _error(f"jupyter-book build failed with exit status {err.returncode} (its messages are above); "
                      f"the executed chapters are kept in {root / STAGING}", 1)
    except FileNotFoundError as err:
        return _error(f"jupyter-book could not be started ({err.strerror}: {err.filename}); "
                      "install the requirements (make setup)", 1)
    print(f"book rendered: {html / 'index.html'}")
    return 0


def _run(argv: list[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except _UsageError as err:
        return _error(str(err))
    if args.render_only and (args.chapter or args.parameter or args.force or args.no_render):
        given = [flag for flag, on in (("--chapter", args.chapter), ("-p", args.parameter), ("--force", args.force),
                                       ("--no-render", args.no_render)) if on]
        return _error(f"--render-only executes nothing, so {', '.join(given)} would be ignored; drop one or the other")
    try:
        root = repo_root()
    except FileNotFoundError as err:
        return _error(str(err))

    if args.render_only:
        try:
            check_build_folders(root, [], render=True)
        except ValueError as err:
            return _error(str(err))
        return _render(root)
    notebooks = chapter_notebooks(root)
    if args.chapter:
        wanted = {Path(c).stem for c in args.chapter}
        missing = wanted - {nb.stem for nb in notebooks}
        if missing:
            return _error(f"--chapter {', '.join(sorted(missing))}: not a notebook chapter of _toc.yml; "
                          f"the chapters are {', '.join(nb.stem for nb in notebooks)}")
        notebooks = [nb for nb in notebooks if nb.stem in wanted]
    seen: dict[str, str] = {}
    for name, value in args.parameter:
        if name in seen and seen[name] != value:
            return _error(f"-p {name}: given twice ({seen[name]} and {value}); give it once")
        seen[name] = value
    overrides = as_lists({name: parse_value(value) for name, value in args.parameter})

    # An override must name a parameter of every chapter it is aimed at (--chapter), or of at
    # least one chapter when the whole book runs (then it applies where the parameter exists).
    chapter_defaults = {nb: notebook_parameters(root / nb) for nb in notebooks}
    for name in overrides:
        having = [nb for nb, d in chapter_defaults.items() if name in d]
        if (args.chapter and len(having) < len(notebooks)) or not having:
            lacking = [nb.stem for nb in notebooks if nb not in having]
            return _error(f"-p {name}: not a parameter of chapter(s) {lacking}; their parameters are "
                          f"{ {nb.stem: sorted(chapter_defaults[nb]) for nb in notebooks if nb.stem in lacking} }")

    # Every value is checked for every chapter it goes to, then the folders and the kernel:
    # nothing is written and no kernel starts before all of them pass.
    try:
        for nb in notebooks:
            check_overrides(nb, chapter_defaults[nb], {k: v for k, v in overrides.items() if k in chapter_defaults[nb]},
                            base=(root / nb).parent)
        check_build_folders(root, notebooks, render=not args.no_render)
        check_kernel(args.kernel)
    except (ValueError, FileNotFoundError) as err:
        return _error(str(err))

    stage_static_files(root)
    for nb in notebooks:
        chapter_overrides = {k: v for k, v in overrides.items() if k in chapter_defaults[nb]}
        start = time.perf_counter()
        try:
            ran = execute_chapter(root, nb, chapter_overrides, force=args.force, kernel=args.kernel)
        except (ChapterError, ValueError) as err:
            return _error(str(err), 1)
        state = f"executed in {time.perf_counter() - start:.0f} s" if ran else "up to date"
        print(f"{nb}: {state}", flush=True)
    return 0 if args.no_render else _render(root)


def main(argv: list[str] | None = None) -> int:
    """``python -m visprune.book``: exit status 0, 1 (a chapter or the rendering failed), 2 (a bad
    input, refused before anything runs) or 130 (interrupted; rerunning resumes)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
