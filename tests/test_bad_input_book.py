"""Every bad input to ``python -m visprune.book`` is refused in one line before any kernel starts.

Each case runs the command line (``book.main``) on a throw-away copy of the book's layout
(``_config.yml``, ``_toc.yml``, the real chapters) whose ``_build`` already holds an executed
chapter, its stamp and a rendered page, and checks: exit status 2, one line on stderr that names
the parameter (and the chapter where one applies), no traceback, nothing printed on stdout, and
every file of the copy unchanged. ``papermill.execute_notebook`` is replaced by a function that
fails the test, so a case that got as far as executing a chapter cannot pass. Ctrl-C: exit
status 130, one line, the chapters finished before it kept (a rerun skips them).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from visprune.book import build as book

ROOT = Path(__file__).resolve().parents[1]
BUILT = Path("chapters") / "performance.ipynb"  # the chapter already executed in the copy


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A copy of the book's layout with one chapter already built; the current directory."""
    for name in book.BOOK_FILES:
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "chapters", tmp_path / "chapters")
    target = tmp_path / book.STAGING / BUILT
    target.parent.mkdir(parents=True)
    shutil.copy2(tmp_path / BUILT, target)
    target.with_suffix(".stamp").write_text("stamp of the earlier build\n")
    (tmp_path / book.BUILD / "html").mkdir()
    (tmp_path / book.BUILD / "html" / "index.html").write_text("<html>earlier build</html>\n")
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    monkeypatch.chdir(tmp_path)

    def no_kernel(*args, **kwargs):
        raise AssertionError("a chapter was executed: the bad input was not refused before the kernel")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its content hash and modification time."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def html_is_a_file(root: Path, monkeypatch) -> None:
    shutil.rmtree(root / book.BUILD / "html")
    (root / book.BUILD / "html").write_text("a file where the rendered book goes\n")


def staging_not_writable(root: Path, monkeypatch) -> None:
    real_access = os.access
    staging = (root / book.STAGING).resolve()
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: Path(p).resolve() != staging and real_access(p, mode))


#: (id, arguments, what the one line must contain, a set-up step). "{root}" is the copy's folder.
CASES = [
    ("unknown-chapter", ["--chapter", "nope"], ["--chapter nope", "not a notebook chapter"], None),
    ("p-without-value", ["-p", "n_samples"], ["-p needs a parameter name and a value"], None),
    ("p-value-then-option", ["--chapter", "pope_calibration", "-p", "n_samples", "--force"],
     ["-p needs a parameter name and a value"], None),
    ("unknown-option", ["--bogus"], ["unrecognized arguments: --bogus"], None),
    ("unknown-parameter", ["--chapter", "pope_calibration", "-p", "beta", "2"], ["-p beta", "pope_calibration"], None),
    ("parameter-twice", ["-p", "seed", "1", "-p", "seed", "2"], ["-p seed", "given twice"], None),
    ("pope-split-bogus", ["--chapter", "calibration_primer", "-p", "pope_split", "bogus"],
     ["-p pope_split", "'bogus'", "'adversarial'", "(chapter calibration_primer)"], None),
    ("n-samples-negative", ["--chapter", "pope_calibration", "-p", "n_samples", "-5"],
     ["-p n_samples", "positive integer", "got -5", "(chapter pope_calibration)"], None),
    ("n-samples-not-a-literal", ["--chapter", "scienceqa_calibration", "-p", "n_samples", "abc"],
     ["-p n_samples", "got 'abc'", "(chapter scienceqa_calibration)"], None),
    ("n-bins-boolean", ["--chapter", "gap_power", "-p", "n_bins", "True"],
     ["-p n_bins", "got True", "(chapter gap_power)"], None),
    ("batch-size-float", ["--chapter", "alpha_sweep", "-p", "batch_size", "2.0"],
     ["-p batch_size", "got 2.0", "(chapter alpha_sweep)"], None),
    ("seed-negative", ["--chapter", "adaptive_pruner", "-p", "seed", "-1"],
     ["-p seed", "non-negative integer", "(chapter adaptive_pruner)"], None),
    ("budget-zero", ["--chapter", "pope_calibration", "-p", "budgets", "[64, 0]"],
     ["-p budgets", "0 is not an integer in 1..576", "(chapter pope_calibration)"], None),
    ("budget-above-576", ["--chapter", "gap_power", "-p", "budgets", "[64, 600]"],
     ["-p budgets", "600 is not", "(chapter gap_power)"], None),
    ("budgets-empty", ["--chapter", "alpha_sweep", "-p", "budgets", "[]"], ["-p budgets", "got []"], None),
    ("budgets-unhashable-literal", ["--chapter", "pope_calibration", "-p", "budgets", "{[1]: 2}"],
     ["-p budgets", "got '{[1]: 2}'"], None),
    ("budgets-without-focus", ["--chapter", "pope_calibration", "-p", "budgets", "[128]"],
     ["-p budgets", "focus_budget 64", "(chapter pope_calibration)"], None),
    ("focus-not-a-budget", ["--chapter", "scienceqa_calibration", "-p", "focus_budget", "100"],
     ["-p focus_budget", "100 is not one of budgets", "(chapter scienceqa_calibration)"], None),
    ("splits-unknown", ["--chapter", "alpha_sweep", "-p", "splits", "['random', 'hard']"],
     ["-p splits", "'hard' is not one of", "(chapter alpha_sweep)"], None),
    ("splits-twice", ["--chapter", "pope_calibration", "-p", "splits", "['random', 'random']"],
     ["-p splits", "'random' appears twice"], None),
    ("alpha-negative", ["--chapter", "pope_calibration", "-p", "alphas", "[-0.5, 1.0]"],
     ["-p alphas", "-0.5 is not a number >= 0", "(chapter pope_calibration)"], None),
    ("alpha-sweep-one-value", ["--chapter", "alpha_sweep", "-p", "alphas", "[0.5]"],
     ["-p alphas", "at least 2", "(chapter alpha_sweep)"], None),
    ("gap-power-zero", ["--chapter", "gap_power", "-p", "gap_powers", "[0, 1.0]"],
     ["-p gap_powers", "0 is not a positive number", "(chapter gap_power)"], None),
    ("gap-powers-without-default", ["--chapter", "gap_power", "-p", "gap_powers", "[2.0, 4.0]"],
     ["-p gap_powers", "lacks 1.0", "(chapter gap_power)"], None),
    ("method-not-drawable",
     ["--chapter", "diversity_hallucination", "-p", "methods", "['saliency', 'divprune', 'fastv']"],
     ["-p methods", "'fastv' is not one of", "(chapter diversity_hallucination)"], None),
    ("methods-without-divprune", ["--chapter", "diversity_hallucination", "-p", "methods", "['saliency']"],
     ["-p methods", "lacks 'divprune'"], None),
    ("tau-max-infinite", ["--chapter", "adaptive_pruner", "-p", "tau_max", "1e999"],
     ["-p tau_max", "got inf", "(chapter adaptive_pruner)"], None),
    ("complexity-by-unknown", ["--chapter", "adaptive_pruner", "-p", "complexity_by", "size"],
     ["-p complexity_by", "'erank'", "(chapter adaptive_pruner)"], None),
    ("sharpness-zero", ["--chapter", "calibration_primer", "-p", "sharpness", "0"],
     ["-p sharpness", "positive number", "(chapter calibration_primer)"], None),
    ("profile-unknown", ["-p", "profile", "llava"], ["-p profile", "'llava-1.5-7b'", "(chapter "], None),
    ("device-unknown", ["--chapter", "pope_calibration", "-p", "device", "gpu"],
     ["-p device", "got 'gpu'", "(chapter pope_calibration)"], None),
    ("model-path-missing", ["--chapter", "pope_calibration", "-p", "model_path", "no/such/model"],
     ["-p model_path", "no/such/model not found", "chapter's folder", "(chapter pope_calibration)"], None),
    ("results-dir-is-a-file", ["--chapter", "performance", "-p", "results_dir", "{root}/a_file.txt"],
     ["-p results_dir", "a_file.txt is a file", "(chapter performance)"], None),
    ("results-dir-under-a-file", ["--chapter", "performance", "-p", "results_dir", "{root}/a_file.txt/results"],
     ["-p results_dir", "cannot be created", "a_file.txt is a file"], None),
    ("html-folder-is-a-file", ["--chapter", "performance"], ["build folder", "html is a file"], html_is_a_file),
    ("staging-not-writable", ["--chapter", "performance", "--no-render"], ["build folder", "src is not writable"],
     staging_not_writable),
    ("kernel-missing", ["--chapter", "performance", "--kernel", "no-such-kernel"], ["--kernel no-such-kernel"], None),
    ("render-only-with-parameter", ["--render-only", "-p", "seed", "1"], ["--render-only", "-p"], None),
]


@pytest.mark.parametrize("args, expected, setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(layout, monkeypatch, capsys, args, expected, setup):
    if setup is not None:
        setup(layout, monkeypatch)
    before = snapshot(layout)
    status = book.main([a.replace("{root}", str(layout)) for a in args])
    out, err = capsys.readouterr()
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert snapshot(layout) == before  # nothing built, staged or rendered was touched


def test_the_command_line_itself_says_one_line(layout):
    """``python -m visprune.book`` (argparse's own exit path included) in a subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args, fragment in ((["-p", "n_samples"], "-p needs"), (["-p", "n_samples", "0"], "-p n_samples")):
        done = subprocess.run([sys.executable, "-m", "visprune.book", *args], cwd=layout, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and fragment in done.stderr, done.stderr


def _fake_execution(interrupt_at: str, calls: list[str], ename: str | None = None):
    """A stand-in for papermill: "executes" a chapter by copying it, and is interrupted at one."""

    def execute_notebook(source, output, **kwargs):
        calls.append(Path(source).stem)
        if Path(source).stem == interrupt_at:
            if ename is None:
                raise KeyboardInterrupt
            raise papermill.PapermillExecutionError(3, 3, "", ename, "", [])
        shutil.copy2(source, output)

    return execute_notebook


@pytest.mark.parametrize("where", ["runner", "kernel"])
def test_interrupt_exits_130_and_a_rerun_resumes(layout, monkeypatch, capsys, where):
    """Ctrl-C in the runner (KeyboardInterrupt) or in the kernel (papermill reports the kernel's
    KeyboardInterrupt): one line, exit 130; the chapter finished before it keeps its stamp, the
    interrupted one is not staged, and the same command then executes only what is left."""
    args = ["--chapter", "calibration_primer", "--chapter", "pope_calibration", "--no-render", "--kernel", "python3"]
    calls: list[str] = []
    ename = None if where == "runner" else "KeyboardInterrupt"
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execution("pope_calibration", calls, ename))
    built_before = snapshot(layout / book.STAGING)
    assert book.main(args) == 130
    out, err = capsys.readouterr()
    assert err.strip() == book.INTERRUPTED and "Traceback" not in err
    assert calls == ["calibration_primer", "pope_calibration"]
    staged = layout / book.STAGING / "chapters"
    assert (staged / "calibration_primer.stamp").is_file()
    assert not (staged / "pope_calibration.ipynb").exists()
    after = snapshot(layout / book.STAGING)
    assert {k: v for k, v in after.items() if k in built_before} == built_before  # the earlier build is intact

    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execution("nothing", calls))
    assert book.main(args) == 0
    assert calls == ["pope_calibration"]  # calibration_primer was up to date
    assert "chapters/calibration_primer.ipynb: up to date" in capsys.readouterr().out
    executed = nbformat.read(staged / "pope_calibration.ipynb", as_version=4)
    assert any("parameters-table" in c.metadata.get("tags", []) for c in executed.cells)
