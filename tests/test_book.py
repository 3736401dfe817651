"""The book runner: papermill execution, parameters table, stop on failure, overrides.

Runs on a throw-away book in a temporary directory with one tiny notebook chapter, so it
checks the runner itself, independent of the real chapters (which have their own tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from visprune.book import build as book

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


def _start_book(root: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "visprune.book", "--chapter", "demo", "--kernel", "python3",
                             "--no-render"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not inherited as ignored


def test_ctrl_c_during_a_chapter_is_one_line_and_exit_130(tmp_path):
    """SIGINT to the command's process group, as Ctrl-C in a terminal sends it, while a cell runs:
    one line, exit status 130, the chapter not staged; the kernel's own noise goes to its log."""
    root = _make_book(tmp_path, "import pathlib, time\npathlib.Path('started').write_text('x')\ntime.sleep(120)")
    proc = _start_book(root)
    for _ in range(600):  # wait until the cell runs (the kernel has started)
        if (root / "chapters" / "started").exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert (root / "chapters" / "started").exists(), "the chapter's cell never started"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == book.INTERRUPTED
    assert not (root / book.STAGING / "chapters" / "demo.ipynb").exists()
    assert not (root / book.STAGING / "chapters" / "demo.stamp").exists()


def test_a_dead_kernel_is_a_failing_chapter_named_in_one_line(tmp_path):
    root = _make_book(tmp_path, "import os\nos._exit(1)")
    proc = _start_book(root)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(line) == 1 and "chapter chapters/demo.ipynb: its kernel stopped" in line[0]
    assert "demo.kernel.log" in line[0]


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
    assert err.strip() == "error: -p alpha: expected int (like the default 1), got list [1, 2] (chapter demo)"
    assert not (root / book.STAGING / "chapters" / "demo.ipynb").exists()


def test_check_parameter_types():
    defaults = {"budgets": [64], "alpha": 1.0, "n": 10, "path": None, "name": "toy"}
    book.check_parameter_types(defaults, {"budgets": (16,), "alpha": 1, "n": 3, "path": "/x", "name": None})
    for bad in ({"budgets": 64}, {"alpha": "high"}, {"n": 2.5}, {"name": 3}, {"n": True}):
        with pytest.raises(ValueError, match=f"^{list(bad)[0]}: expected"):
            book.check_parameter_types(defaults, bad)


# ------------------------------------------------------------------ parameter rules (issue 15)


def test_every_chapter_parameter_has_a_rule_and_its_default_passes():
    """A new chapter parameter cannot slip through: it needs a rule in visprune.book.chapters."""
    from visprune.book import chapters

    notebooks = book.chapter_notebooks(ROOT)
    assert notebooks
    for nb in notebooks:
        defaults = book.notebook_parameters(ROOT / nb)
        assert defaults, f"{nb}: no parameters cell"
        unruled = [name for name in defaults if chapters.parameter_rule(name, nb.stem) is None]
        assert not unruled, f"{nb}: parameters without a rule in visprune.book.chapters.PARAMETER_RULES: {unruled}"
        chapters.check_parameters(defaults, nb.stem, base=(ROOT / nb).parent)  # raises on a bad default


def test_rules_follow_the_engine_and_the_definitions():
    """The choices come from the engine's own lists; ranges as ALGORITHMS.md defines them."""
    from visprune.book import chapters
    from visprune import engine as evaluation
    from visprune.engine import profiles
    from visprune.pruning import pre_llm_methods

    rules = chapters.PARAMETER_RULES
    assert rules["profile"].choices() == profiles.PROFILES
    assert rules["pope_split"].choices() == ("random", "popular", "adversarial")
    assert {f"pope-{s}" for s in rules["splits"].item.choices()} <= set(evaluation.DATASETS)
    assert set(rules["methods"].item.choices()) <= set(pre_llm_methods()) - {"adaptive"}
    accepted = {name: [v for v in (-1, 0, 0.5, 1, 1.5) if rules[name].problem(v) is None]
                for name in ("n_bins", "seed", "fastv_layer", "c", "tau_max", "sharpness")}
    assert accepted == {"n_bins": [1], "seed": [0, 1], "fastv_layer": [0, 1], "c": [0, 0.5, 1, 1.5],
                        "tau_max": [0, 0.5, 1, 1.5], "sharpness": [0.5, 1, 1.5]}
    assert [a for a in ([0.0], [-0.1], [0, 0.0]) if rules["alphas"].problem(a) is None] == [[0.0]]
    assert [p for p in ([1.0], [0, 1.0], [0.5, 1]) if rules["gap_powers"].problem(p) is None] == [[1.0], [0.5, 1]]


@pytest.mark.parametrize("rule, good, bad", [
    ("n_samples", [1, 300, None], [0, -5, True, 2.0, "300", [300]]),
    ("batch_size", [1, 16], [0, None, False, 16.0]),
    ("budgets", [[64], [64, 128, 192], (576, 1)], [[], [0], [577], [64, 64], 64, None, [True], [64.0]]),
    ("focus_budget", [1, 576], [0, 577, None]),
    ("splits", [["random"], ["adversarial", "popular"]], [[], ["bogus"], ["random", "random"], "random"]),
    ("pope_split", ["popular"], ["bogus", None, ["random"]]),
    ("alphas", [[0.0], [0, 0.5, 1.0]], [[], [-0.5], [float("nan")], [float("inf")], [True], ["a"]]),
    ("temperatures", [[0.5, 2.5]], [[0.0], [-1.0], []]),
    ("bin_counts", [[5, 15]], [[0], [5.0], [5, 5]]),
    ("complexity_threshold", [None, -1.5, 3], [float("inf"), "median", True]),
    ("complexity_by", ["erank", "objects", "entropy"], ["size", None]),
    ("methods", [["saliency", "divprune"], ["random", "divprune", "scope", "saliency"]],
     [["saliency"], ["saliency", "divprune", "fastv"], ["saliency", "divprune", "adaptive"],
      ["none", "saliency", "divprune"]]),
    ("device", [None, "cpu", "cpu:0"], ["gpu", 0, ""]),
    ("results_dir", [None, "scratch", "/tmp"], ["", 3, ["a"]]),
])
def test_rule_accepts_and_refuses(rule, good, bad):
    from visprune.book import chapters

    r = chapters.PARAMETER_RULES[rule]
    for value in good:
        assert r.problem(value, ROOT / "chapters") is None, (rule, value)
    for value in bad:
        with pytest.raises(ValueError, match=f"^{rule}: expected .*, {re.escape(f'got {value!r}')}"):
            r.check(rule, value, ROOT / "chapters")


def test_folder_rules_read_relative_paths_from_the_chapter_folder(tmp_path):
    from visprune.book import chapters

    (tmp_path / "chapters" / "model").mkdir(parents=True)
    (tmp_path / "chapters" / "file.txt").write_text("x")
    model, results = chapters.PARAMETER_RULES["model_path"], chapters.PARAMETER_RULES["results_dir"]
    base = tmp_path / "chapters"
    assert model.problem("model", base) is None and model.problem(str(base / "model")) is None
    with pytest.raises(FileNotFoundError, match=r"^model_path: folder .*chapters/nothing not found \(a relative path"):
        model.check("model_path", "nothing", base)
    with pytest.raises(ValueError, match="file.txt is a file, not a folder"):
        model.check("model_path", "file.txt", base)
    assert results.problem("new/deeper", base) is None  # created when missing
    with pytest.raises(ValueError, match="cannot be created: .*file.txt is a file"):
        results.check("results_dir", "file.txt/results", base)


def test_focus_budget_must_be_a_budget_and_the_changed_one_is_named():
    from visprune.book import chapters

    values = {"budgets": [64, 128], "focus_budget": 64}
    chapters.check_parameters(values)
    with pytest.raises(ValueError, match=r"^budgets: \[128\] does not include focus_budget 64"):
        chapters.check_parameters({**values, "budgets": [128]}, changed=["budgets"])
    with pytest.raises(ValueError, match=r"^focus_budget: 32 is not one of budgets \[64, 128\]"):
        chapters.check_parameters({**values, "focus_budget": 32}, changed=["focus_budget"])
    # only the changed names (and what goes with them) are checked
    chapters.check_parameters({**values, "budgets": [128], "seed": 0}, changed=["seed"])


def test_chapter_rule_overrides_the_common_one():
    from visprune.book import chapters

    chapters.check_parameters({"alphas": [0.0]}, "gap_power")
    with pytest.raises(ValueError, match="^alphas: expected a list of at least 2"):
        chapters.check_parameters({"alphas": [0.0]}, "alpha_sweep")


def test_check_overrides_names_parameter_and_chapter():
    defaults = {"n_samples": 300, "alpha": 1, "budgets": [64], "focus_budget": 64}
    book.check_overrides(Path("chapters/x.ipynb"), defaults, {"n_samples": None, "alpha": 2})
    with pytest.raises(ValueError) as err:
        book.check_overrides(Path("chapters/pope_calibration.ipynb"), defaults, {"n_samples": -5})
    assert str(err.value) == ("-p n_samples: expected a positive integer or None (the whole data set), got -5 "
                              "(chapter pope_calibration)")


def test_tuple_override_reaches_the_chapter_as_a_list(tmp_path, monkeypatch):
    import papermill

    root = _make_book(tmp_path, "print(alpha)")
    seen = {}

    def fake_execute(source, output, parameters, **kwargs):
        seen.update(parameters)
        shutil.copy2(source, output)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    assert book.execute_chapter(root, Path("chapters/demo.ipynb"), {"name": "x", "budgets": (16, 32)}, kernel="python3")
    assert seen == {"name": "x", "budgets": [16, 32]}
