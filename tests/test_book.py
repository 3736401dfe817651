"""The book runner: papermill execution, parameters table, stop on failure, overrides.

Runs on a throw-away book in a temporary directory with one tiny notebook chapter, so it
checks the runner itself, independent of the real chapters (which have their own tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from visprune import book

ROOT = Path(__file__).resolve().parents[1]


def _make_book(tmp_path: Path, body: str) -> Path:
    for name in book.BOOK_FILES:
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: chapters/intro\nchapters:\n  - file: chapters/demo\n"
    )
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "intro.md").write_text("# Intro\n")
    params = nbformat.v4.new_code_cell("alpha = 1\nname = 'toy'")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Demo"),
        params,
        nbformat.v4.new_code_cell(body),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "chapters" / "demo.ipynb")
    return tmp_path


def test_chapter_notebooks_follow_toc(tmp_path):
    root = _make_book(tmp_path, "print(alpha)")
    assert book.chapter_notebooks(root) == [Path("chapters/demo.ipynb")]


def test_execute_injects_parameters_and_hides_cells(tmp_path):
    root = _make_book(tmp_path, "result = alpha * 10\nprint('result', result, name)")
    assert book.execute_chapter(root, Path("chapters/demo.ipynb"), {"alpha": 3}, kernel="python3")
    out = nbformat.read(root / book.STAGING / "chapters" / "demo.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs)
    assert "result 30 toy" in printed
    hidden = [c for c in out.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert {t for c in hidden for t in c.metadata["tags"]} >= {"parameters", "injected-parameters"}
    body = [c for c in out.cells if c.cell_type == "code" and "remove-cell" not in c.metadata.get("tags", [])]
    assert body and all("hide-input" in c.metadata["tags"] for c in body)  # code folded, outputs shown
    table = [c for c in out.cells if "parameters-table" in c.metadata.get("tags", [])]
    assert len(table) == 1 and "`alpha` | `3`" in table[0].source and "`name` | `'toy'`" in table[0].source
    # unchanged notebook + parameters: not executed again
    assert not book.execute_chapter(root, Path("chapters/demo.ipynb"), {"alpha": 3}, kernel="python3")
    assert book.execute_chapter(root, Path("chapters/demo.ipynb"), {"alpha": 4}, kernel="python3")


def test_failing_chapter_raises_and_is_not_staged(tmp_path):
    root = _make_book(tmp_path, "raise RuntimeError('boom in chapter')")
    with pytest.raises(book.ChapterError, match=r"chapters/demo.ipynb failed .*boom in chapter"):
        book.execute_chapter(root, Path("chapters/demo.ipynb"), {}, kernel="python3")
    assert not (root / book.STAGING / "chapters" / "demo.ipynb").exists()


def test_cli_rejects_unknown_chapter_and_parameter(tmp_path, monkeypatch, capsys):
    root = _make_book(tmp_path, "print(alpha)")
    monkeypatch.chdir(root)
    assert book.main(["--chapter", "nope", "--no-render"]) == 2
    assert "not a notebook chapter" in capsys.readouterr().err
    assert book.main(["--chapter", "demo", "-p", "beta", "2", "--no-render"]) == 2
    assert "-p beta" in capsys.readouterr().err


def test_parse_value():
    assert book.parse_value("[16, 32]") == [16, 32]
    assert book.parse_value("0.5") == 0.5
    assert book.parse_value("None") is None
    assert book.parse_value("toy") == "toy"


def test_parameter_of_the_wrong_type_is_rejected_before_execution(tmp_path, monkeypatch, capsys):
    root = _make_book(tmp_path, "print(alpha)")
    monkeypatch.chdir(root)
    assert book.main(["--chapter", "demo", "-p", "alpha", "[1, 2]", "--no-render"]) == 2
    err = capsys.readouterr().err
    assert "'alpha'" in err and "expects int" in err
    assert not (root / book.STAGING / "chapters" / "demo.ipynb").exists()


def test_check_parameter_types():
    defaults = {"budgets": [64], "alpha": 1.0, "n": 10, "path": None, "name": "toy"}
    book.check_parameter_types("c", defaults, {"budgets": (16,), "alpha": 1, "n": 3, "path": "/x", "name": None})
    for bad in ({"budgets": 64}, {"alpha": "high"}, {"n": 2.5}, {"name": 3}):
        with pytest.raises(ValueError, match=list(bad)[0]):
            book.check_parameter_types("c", defaults, bad)
