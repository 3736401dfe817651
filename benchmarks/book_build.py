"""Benchmark: how long the default toy book takes to build from nothing.

Not a test; run it by hand (it executes every chapter at its default parameters, so it takes
as long as ``make book`` on an empty cache):

    python benchmarks/book_build.py                      # every notebook chapter of _toc.yml, then render
    python benchmarks/book_build.py --no-render          # execution only
    python benchmarks/book_build.py --chapters pope_calibration gap_power

What it does: copies the book (``_config.yml``, ``_toc.yml``, ``references.bib``, ``chapters/``)
into a temporary folder, points the run caches at a fresh, empty folder (``VISPRUNE_RESULTS``),
and runs ``python -m visprune.book --force --no-render --chapter <name>`` once per chapter, in
the order of ``_toc.yml`` (the chapters share run caches, as in a real build: a run one chapter
computed is read from the cache by the next), then ``--render-only``. The repository's own
``_build`` and ``data/results`` are not touched; the model and the toy world are the shipped ones.

For each step it records the wall time and the CPU time of the processes it started (the
papermill kernel included), since on a shared machine the wall time also measures the other
jobs. The CSV (default benchmarks/results/book_build.csv) has one row per chapter, one for
rendering and one ``total``: device, step, wall_s, cpu_s, load_avg_start, load_avg_end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from visprune.book.performance import write_csv

ROOT = Path(__file__).resolve().parents[1]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, float, float, float]:
    """Run ``command``; (wall s, CPU s of it and its children, load average before, after)."""
    load_start, cpu_start, start = load_average(), children_cpu_s(), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu_start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return wall, cpu, load_start, load_average()


def main(argv=None) -> int:
    from visprune.book import build as book

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="+", default=None, help="chapter names (default: every notebook chapter of _toc.yml)")
    parser.add_argument("--no-render", action="store_true", help="time the chapters only")
    parser.add_argument("--kernel", default=book.KERNEL_NAME, help=f"Jupyter kernel (default {book.KERNEL_NAME})")
    parser.add_argument("--out", default="benchmarks/results/book_build.csv", help="CSV to write")
    args = parser.parse_args(argv)

    chapters = args.chapters or [nb.stem for nb in book.chapter_notebooks(ROOT)]
    if not chapters:
        parser.error("_toc.yml lists no notebook chapters; name them with --chapters")
    missing = [c for c in chapters if not (ROOT / "chapters" / f"{c}.ipynb").is_file()]
    if missing:
        parser.error(f"--chapters: no notebook chapters/<name>.ipynb for {missing}")

    device = f"cpu ({os.cpu_count()} cores)"
    rows = []
    with tempfile.TemporaryDirectory(prefix="book-build-") as scratch:
        copy, results = Path(scratch) / "book", Path(scratch) / "results"
        copy.mkdir()
        for name in book.BOOK_FILES:
            shutil.copy2(ROOT / name, copy / name)
        shutil.copytree(ROOT / "chapters", copy / "chapters")
        env = {**os.environ, "VISPRUNE_RESULTS": str(results)}
        python = [sys.executable, "-m", "visprune.book"]
        print(f"device: {device}; {len(chapters)} chapters; cold caches in {results}", flush=True)
        for chapter in chapters:
            wall, cpu, l0, l1 = timed(python + ["--force", "--no-render", "--kernel", args.kernel, "--chapter", chapter],
                                      copy, env)
            rows.append(dict(device=device, step=chapter, wall_s=wall, cpu_s=cpu, load_avg_start=l0, load_avg_end=l1))
            print(f"{chapter:>28}: {wall:7.1f} s wall, {cpu:7.1f} s CPU (load {l0:.1f} -> {l1:.1f})", flush=True)
        if not args.no_render:
            wall, cpu, l0, l1 = timed(python + ["--render-only"], copy, env)
            rows.append(dict(device=device, step="render", wall_s=wall, cpu_s=cpu, load_avg_start=l0, load_avg_end=l1))
            print(f"{'render':>28}: {wall:7.1f} s wall, {cpu:7.1f} s CPU", flush=True)
    total = dict(device=device, step="total", wall_s=sum(r["wall_s"] for r in rows), cpu_s=sum(r["cpu_s"] for r in rows),
                 load_avg_start=rows[0]["load_avg_start"], load_avg_end=rows[-1]["load_avg_end"])
    rows.append(total)
    print(f"{'total':>28}: {total['wall_s'] / 60:7.1f} min wall, {total['cpu_s'] / 60:7.1f} min CPU "
          f"({'within' if total['wall_s'] <= 20 * 60 else 'ABOVE'} the 20-minute target)")

    print(f"wrote {write_csv(rows, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
