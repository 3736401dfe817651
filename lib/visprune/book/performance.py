"""Performance results: read the benchmarks' CSV files, check the targets, draw the figures.

The benchmarks under ``benchmarks/`` (see ``benchmarks/README.md``) time the parts of DESIGN.md
section 4's pipeline and write one CSV each under ``benchmarks/results/``. The performance
chapter never runs them (the book must stay fast); it reads their CSVs with the functions here:

- :func:`load_results` reads every CSV that is there (a missing required one raises
  FileNotFoundError naming the command that writes it);
- :func:`prefill_table`, :func:`selector_table`, :func:`engine_table`, :func:`book_table` and
  :func:`machine_table` shape them for display;
- :func:`check_targets` says, for each performance target, the worst measured value, the
  threshold and whether it is met (computed, never typed in); :func:`findings` turns that into
  the chapter's Markdown summary;
- :func:`plot_prefill`, :func:`plot_selectors`, :func:`plot_engine`, :func:`plot_book` draw them;
- :func:`cache_footprint` sums up the run caches on disk.

The FLOPs of a prefill over T tokens, the ideal the time ratios are compared with (the formula is
the one in ``benchmarks/prefill_and_selectors.py`` and ``benchmarks/fastv_prefill.py``)::

    F(T) = L * (2 P_layer T + 4 T^2 h) + 2 h V
    P_layer = 2 h^2 + 2 h n_kv d_head + 3 h d_ff
    FastV at layer l, keeping K of N: l f(40 + N) + (L - l) f(40 + K) + 2 h V + the choice's own q/k work

Length: over 400 lines because the performance chapter's tables, targets, findings and four
figures read the same benchmark files and are kept together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from visprune.engine.profiles import repo_root, resolve_profile

#: Each benchmark's CSV (under the results folder) and the command that writes it.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "prefill_and_selectors": ("prefill_and_selectors.csv",
                              "python benchmarks/prefill_and_selectors.py --threads 1 --clock process"),
    "fastv_prefill": ("fastv_prefill.csv", "python benchmarks/fastv_prefill.py --threads 1 --clock process --batches 1 4"),
    "engine_throughput": ("engine_throughput.csv",
                          "python benchmarks/engine_throughput.py --threads 1 --clock process"),
    "book_build": ("book_build.csv", "python benchmarks/book_build.py"),
}
#: The benchmarks the chapter cannot do without; the others are shown when their CSV exists.
REQUIRED = ("prefill_and_selectors", "fastv_prefill", "engine_throughput")

#: The performance targets (issue 8): a selector's cost as a fraction of one unpruned prefill;
#: the largest pruned-prefill time ratio over its FLOPs ratio; the engine's throughput as a
#: fraction of the bare forward's; the default book's build time in minutes.
TARGETS = {"selector_share": 0.02, "prefill_factor": 1.3, "engine_ratio": 0.90, "book_minutes": 20.0}

# ------------------------------------------------------------------------------ reading


def default_results_dir() -> Path:
    """``benchmarks/results`` of the repository the library is installed from."""
    return repo_root() / "benchmarks" / "results"


def load_results(folder: str | Path | None = None, required: tuple[str, ...] = REQUIRED) -> dict[str, pd.DataFrame]:
    """Every benchmark CSV found in ``folder`` (default :func:`default_results_dir`), by name.

    A missing file among ``required`` raises FileNotFoundError naming it and the command that
    writes it; the others are simply left out of the returned dict.
    """
    root = Path(folder) if folder is not None else default_results_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark results folder not found: {root}. Run the benchmarks "
                                f"(benchmarks/README.md) or pass the folder that holds their CSV files.")
    for name in required:
        if name not in BENCHMARKS:
            raise ValueError(f"required: unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    out = {}
    for name, (file, command) in BENCHMARKS.items():
        path = root / file
        if not path.is_file():
            if name in required:
                raise FileNotFoundError(f"benchmark results not found: {path}. Write them with `{command}`.")
            continue
        table = pd.read_csv(path)
        if table.empty:
            raise ValueError(f"{path}: the CSV has no rows; run `{command}` again")
        out[name] = table
    return out


def write_csv(rows: list[Mapping[str, Any]], out: str | Path, fields: list[str] | None = None) -> Path:
    """Write a benchmark's rows as the CSV that :func:`load_results` reads.

    Columns are ``fields`` (default: the first row's keys, in order); floats are written with 6
    significant digits. Creates the parent folder; returns the path.
    """
    import csv

    if not rows:
        raise ValueError(f"rows: nothing to write to {out}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: (f"{v:.6g}" if isinstance(v, float) else v) for key, v in row.items()})
    return out


def _need(results: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame:
    if name not in results:
        file, command = BENCHMARKS[name]
        raise ValueError(f"results: no {file} was loaded; write it with `{command}`")
    return results[name]


# ------------------------------------------------------------------------------ tables


def prefill_table(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every pruned-prefill measurement beside its ideal: one row per (path, method, K, batch).

    Columns: path ("transformers forward" from ``prefill_and_selectors``, "wrapper" from
    ``fastv_prefill``), method ("pre-LLM" or "FastV L=l"), k, batch, seq_len, median_ms,
    time_ratio, flops_ratio and factor = time_ratio / flops_ratio (1 = as fast as the FLOPs
    promise; the target is at most 1.3).
    """
    parts = []
    ps = _need(results, "prefill_and_selectors")
    pre = ps[(ps["section"] == "prefill") & (ps["name"] == "pruned")]
    parts.append(pd.DataFrame({
        "path": "transformers forward", "method": "pre-LLM", "k": pre["k"].astype(int), "batch": 1,
        "seq_len": pre["seq_len"].astype(int), "median_ms": pre["median_ms"], "time_ratio": pre["time_ratio"],
        "flops_ratio": pre["flops_ratio"],
    }))
    if "fastv_prefill" in results:
        fv = results["fastv_prefill"]
        fv = fv[fv["method"].isin(["pre-LLM", "fastv"])]
        method = np.where(fv["method"] == "fastv", "FastV L=" + fv["fastv_layer"].astype("Int64").astype(str), "pre-LLM")
        parts.append(pd.DataFrame({
            "path": "wrapper", "method": method, "k": fv["k"].astype(int), "batch": fv["batch"].astype(int),
            "seq_len": fv["seq_len"].astype(int), "median_ms": fv["median_ms"], "time_ratio": fv["time_ratio"],
            "flops_ratio": fv["flops_ratio"],
        }))
    table = pd.concat(parts, ignore_index=True)
    table["factor"] = table["time_ratio"] / table["flops_ratio"]
    return table.sort_values(["path", "method", "batch", "k"], kind="stable").reset_index(drop=True)


def reference_rows(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The unpruned prefills each ratio is relative to (and the transformers reference), in ms."""
    rows = []
    ps = _need(results, "prefill_and_selectors")
    full = ps[(ps["section"] == "prefill") & (ps["name"] == "unpruned")]
    for r in full.itertuples():
        rows.append({"path": "transformers forward", "what": "unpruned prefill", "batch": 1, "median_ms": r.median_ms})
    if "fastv_prefill" in results:
        fv = results["fastv_prefill"]
        for r in fv[fv["method"].isin(["unpruned", "transformers"])].itertuples():
            what = "unpruned prefill" if r.method == "unpruned" else "transformers' own forward, unpruned"
            rows.append({"path": "wrapper", "what": what, "batch": int(r.batch), "median_ms": r.median_ms})
    return pd.DataFrame(rows)


def selector_table(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Each selector's cost in percent of one unpruned prefill: selectors as rows, K as columns."""
    ps = _need(results, "prefill_and_selectors")
    sel = ps[ps["section"] == "selector"].copy()
    sel["percent"] = 100 * sel["time_ratio"]
    order = list(dict.fromkeys(sel["name"]))
    table = sel.pivot(index="name", columns="k", values="percent").reindex(order)
    table.columns = [f"K={int(k)}" for k in table.columns]
    table.index.name = "selector"
    return table


def engine_table(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The engine against the bare forward: samples per second, ratio and peak memory per path."""
    et = _need(results, "engine_throughput")
    cuda = et["device"].astype(str).str.contains("cpu").eq(False).any()
    table = pd.DataFrame({
        "path": et["variant"], "images encoded": et["n_images"].astype(int), "questions": et["n_samples"].astype(int),
        "seconds": et["median_s"], "samples / s": et["samples_per_s"], "vs bare": et["ratio_to_bare"],
    })
    if cuda:
        table["peak CUDA memory (MB)"] = et["cuda_peak_mb"]
    else:
        table["RSS before the run (MB)"] = et["rss_loaded_mb"]
        table["peak RSS (MB)"] = et["peak_rss_mb"]
    table["max |ΔP(yes)| vs bare"] = et["max_abs_diff_p_yes"]
    return table


def book_table(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Minutes per chapter (and render, and total) of a cold build, or None if not measured."""
    if "book_build" not in results:
        return None
    bb = results["book_build"]
    return pd.DataFrame({"step": bb["step"], "wall (min)": bb["wall_s"] / 60, "CPU (min)": bb["cpu_s"] / 60,
                         "load average": [f"{a:.1f} → {b:.1f}" for a, b in zip(bb["load_avg_start"], bb["load_avg_end"])]})


def machine_table(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Where and how each benchmark ran: device, threads, clock, repeats, load average."""
    rows = []
    for name, table in results.items():
        row = {"benchmark": name, "device": ", ".join(sorted(set(table["device"].astype(str))))}
        if "model" in table:
            row["model"] = ", ".join(sorted(set(table["model"].astype(str))))
        for column, label in (("torch_threads", "threads"), ("clock", "clock"), ("repeats", "repeats")):
            if column in table:
                row[label] = ", ".join(str(v) for v in sorted(set(table[column])))
        loads = table["load_avg"] if "load_avg" in table else pd.concat([table["load_avg_start"], table["load_avg_end"]])
        row["load average"] = f"{loads.min():.2f}" if loads.min() == loads.max() else f"{loads.min():.2f}–{loads.max():.2f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


# ------------------------------------------------------------------------------ targets


def check_targets(results: Mapping[str, pd.DataFrame], targets: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per target: what is measured, the worst value, the threshold, and whether it is met.

    - selectors: the largest selector cost (% of an unpruned prefill) over all selectors and K;
      "adaptive" computing the image's erank itself is a separate row from the selector proper
      ("adaptive (erank given)", what an evaluation run pays, since it records every image's
      erank anyway);
    - prefill: the largest time ratio / FLOPs ratio, per path and batch;
    - engine: the engine's throughput over the bare forward's, with and without reuse;
    - book: the cold build's total wall time, when ``book_build.csv`` exists (else met = None).
    """
    t = dict(TARGETS)
    for name, value in (targets or {}).items():
        if name not in TARGETS:
            raise ValueError(f"targets: unknown target {name!r}; the targets are {sorted(TARGETS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"targets: {name} must be a positive number, got {value!r}")
        t[name] = float(value)
    rows = []
    ps = _need(results, "prefill_and_selectors")
    sel = ps[ps["section"] == "selector"]
    proper = sel[sel["name"] != "adaptive"]
    worst = proper.loc[proper["time_ratio"].idxmax()]
    rows.append({"target": "selector cost", "what": "every selector, worst (adaptive given erank)",
                 "where": f"{worst['name']}, K = {int(worst['k'])}", "value": 100 * worst["time_ratio"],
                 "threshold": 100 * t["selector_share"], "unit": "% of an unpruned prefill",
                 "met": bool(worst["time_ratio"] <= t["selector_share"])})
    scope = sel[(sel["name"] == "scope") & (sel["k"] == sel["k"].max())]
    if len(scope):
        s = scope.iloc[0]
        rows.append({"target": "selector cost", "what": "SCOPE at the largest K", "where": f"K = {int(s['k'])}",
                     "value": 100 * s["time_ratio"], "threshold": 100 * t["selector_share"],
                     "unit": "% of an unpruned prefill", "met": bool(s["time_ratio"] <= t["selector_share"])})
    own = sel[sel["name"] == "adaptive"]
    if len(own):
        w = own.loc[own["time_ratio"].idxmax()]
        rows.append({"target": "selector cost", "what": "adaptive computing erank itself (SVD)",
                     "where": f"K = {int(w['k'])}", "value": 100 * w["time_ratio"], "threshold": 100 * t["selector_share"],
                     "unit": "% of an unpruned prefill", "met": bool(w["time_ratio"] <= t["selector_share"])})
    prefill = prefill_table(results)
    for (path, method, batch), part in prefill.groupby(["path", "method", "batch"], sort=False):
        w = part.loc[part["factor"].idxmax()]
        rows.append({"target": "pruned prefill", "what": f"{method}, {path}, batch {batch}",
                     "where": f"K = {int(w['k'])}", "value": w["factor"], "threshold": t["prefill_factor"],
                     "unit": "time ratio / FLOPs ratio (worst K)",
                     "met": bool(w["factor"] <= t["prefill_factor"])})
    if "engine_throughput" in results:
        et = results["engine_throughput"]
        for variant, what in (("engine", "engine, reusing per-image work"), ("engine-no-reuse", "engine, no reuse")):
            r = et[et["variant"] == variant]
            if len(r):
                value = float(r["ratio_to_bare"].iloc[0])
                rows.append({"target": "engine throughput", "what": what,
                             "where": f"batch {int(r['batch_size'].iloc[0])}", "value": 100 * value,
                             "threshold": 100 * t["engine_ratio"], "unit": "% of the bare forward's samples/s",
                             "met": bool(value >= t["engine_ratio"])})
    if "book_build" in results:
        total = results["book_build"].set_index("step")["wall_s"].get("total", np.nan)
        rows.append({"target": "book build", "what": "default toy book, empty caches", "where": "total wall time",
                     "value": total / 60, "threshold": t["book_minutes"], "unit": "minutes",
                     "met": bool(total / 60 <= t["book_minutes"])})
    else:
        rows.append({"target": "book build", "what": "default toy book, empty caches", "where": "not measured",
                     "value": np.nan, "threshold": t["book_minutes"], "unit": "minutes", "met": None})
    return pd.DataFrame(rows)


def findings(results: Mapping[str, pd.DataFrame], targets: Mapping[str, float] | None = None) -> tuple[str, int, int]:
    """What the measurements show, as Markdown bullets built from the numbers (nothing typed in).

    Returns (markdown, targets met, targets measured); the targets as in :func:`check_targets`.
    """
    t = {**TARGETS, **(targets or {})}
    checks = check_targets(results, targets)

    def row(target: str, what_starts: str):
        part = checks[(checks["target"] == target) & checks["what"].str.startswith(what_starts)]
        return part.iloc[0] if len(part) else None

    measured = checks[checks["met"].notna()]
    n_met = int(measured["met"].astype(bool).sum())
    lines = [f"On {', '.join(sorted(set(machine_table(results)['device'])))}:", ""]

    sel, scope, own = row("selector cost", "every selector"), row("selector cost", "SCOPE"), row("selector cost", "adaptive computing")
    text = (f"- **Selectors.** The most expensive selector as an evaluation run uses it ({sel['where']}) costs "
            f"{sel['value']:.2f}% of one unpruned prefill: the {100 * t['selector_share']:g}% target is {verdict(sel['met'])}.")
    if scope is not None:
        text += f" SCOPE at {scope['where']} costs {scope['value']:.2f}%."
    if own is not None:
        table = selector_table(results)
        column = own["where"].replace("K = ", "K=")
        given = table.loc["adaptive (erank given)", column] if "adaptive (erank given)" in table.index else float("nan")
        text += (f" The adaptive selector computing the image's erank itself costs {own['value']:.2f}% "
                 f"({verdict(own['met'])}); given the erank it costs {given:.2f}%, so the SVD behind the erank is "
                 f"{own['value'] - given:.2f} points of it. An evaluation run always passes the erank, which it computes "
                 "for every image's record anyway.")
    lines.append(text)

    prefill = prefill_table(results)
    pre = checks[checks["target"] == "pruned prefill"]
    missed = pre[~pre["met"].astype(bool)]
    text = (f"- **Prefill.** Over {len(pre)} (method, path, batch) groups, the largest factor between the time ratio "
            f"and the FLOPs ratio is {pre['value'].max():.2f} (target {t['prefill_factor']:g}): met in "
            f"{int(pre['met'].astype(bool).sum())} of {len(pre)}.")
    if len(missed):
        names = "; ".join(f"{r['what']} at {r['where']} ({r['value']:.2f}×)" for _, r in missed.iterrows())
        text += (f" Missed: {names}. With one short prompt (about a hundred tokens at small K), work the formula "
                 "leaves out or under-counts weighs more: every weight matrix is read from memory once per prefill "
                 "whatever the prompt's length, and the LM head is a matrix-vector product over the whole vocabulary "
                 "(benchmarks/README.md measures both).")
        largest = int(prefill["batch"].max())
        if largest > 1:
            batched = prefill[prefill["batch"] == largest]
            text += (f" With {largest} prompts per forward, which share that traffic (the engine runs batches of 16), "
                     f"the worst factor is {batched['factor'].max():.2f}.")
    fastv = prefill[prefill["method"].str.startswith("FastV")]
    if len(fastv):
        best = fastv.loc[fastv["time_ratio"].idxmin()]
        text += (f" FastV saves less than pre-LLM pruning at the same K (at best a time ratio of "
                 f"{best['time_ratio']:.2f}, at K = {int(best['k'])}): its first layers still process every visual token.")
    lines.append(text)

    eng, nore = row("engine throughput", "engine, reusing"), row("engine throughput", "engine, no reuse")
    if eng is not None:
        e = engine_table(results).set_index("path")
        memory = "peak CUDA memory (MB)" if "peak CUDA memory (MB)" in e else "peak RSS (MB)"
        model = ", ".join(sorted(set(results["engine_throughput"]["model"].astype(str))))
        text = (f"- **Engine** (model `{model}`). Reusing each image's work across its questions, the engine answers "
                f"{e.loc['engine', 'samples / s']:.1f} questions per second against the bare forward's "
                f"{e.loc['bare', 'samples / s']:.1f}: {eng['value']:.0f}% ({verdict(eng['met'])} at "
                f"{100 * t['engine_ratio']:g}%), with reading the data and writing the cache included.")
        if nore is not None:
            text += (f" Encoding every question's image, as the bare forward does, it reaches {nore['value']:.0f}% "
                     f"({verdict(nore['met'])}).")
        text += (f" A run's peak memory is {e.loc['engine', memory]:.0f} MB ({memory.split(' (')[0]}), against "
                 f"{e.loc['bare', memory]:.0f} MB for the bare forward.")
        lines.append(text)

    book = row("book build", "default toy book")
    if book is not None and book["met"] is not None:
        lines.append(f"- **Book.** The default toy book builds from empty caches in {book['value']:.1f} minutes "
                     f"({verdict(book['met'])} at {t['book_minutes']:g}).")
    else:
        lines.append("- **Book.** The build time has not been measured yet (`benchmarks/book_build.py`).")
    return "\n".join(lines), n_met, len(measured)


# ------------------------------------------------------------------------------ run caches


def cache_footprint(results_dir: str | Path | None = None) -> pd.DataFrame:
    """Finished runs in a run-cache folder (default: the toy profile's ``data/results``), per data set.

    Columns: dataset, runs, records, MB on disk. Empty when the folder does not exist yet.
    """
    root = resolve_profile("toy", results=results_dir).results
    rows = []
    if Path(root).is_dir():
        for dataset in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            runs = [d for d in dataset.iterdir() if (d / "done.json").is_file()]
            if not runs:
                continue
            records = sum(int(json.loads((d / "done.json").read_text()).get("n_records", 0)) for d in runs)
            size = sum(f.stat().st_size for d in runs for f in d.iterdir() if f.is_file())
            rows.append({"dataset": dataset.name, "runs": len(runs), "records": records, "MB on disk": size / 2**20})
    return pd.DataFrame(rows, columns=["dataset", "runs", "records", "MB on disk"])


# ------------------------------------------------------------------------------ figures


def plot_prefill(table: pd.DataFrame, factor: float = TARGETS["prefill_factor"]) -> Figure:
    """Time ratio against K beside the FLOPs ratio, one panel per (path, batch).

    Per method: the FLOPs ratio as a dashed line, the band up to ``factor`` times it shaded, and
    the measured time ratio as dots. A dot inside its band meets the target.
    """
    groups = list(table.groupby(["path", "batch"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), sharey=True, squeeze=False)
    colors = {}
    for ax, ((path, batch), part) in zip(axes[0], groups):
        for method, rows in part.groupby("method", sort=False):
            color = colors.setdefault(method, "#d62728" if method.startswith("FastV") else "#1f77b4")
            rows = rows.sort_values("k")
            ax.plot(rows["k"], rows["flops_ratio"], "--", color=color, lw=1.2)
            ax.fill_between(rows["k"], rows["flops_ratio"], factor * rows["flops_ratio"], color=color, alpha=0.12)
            ax.plot(rows["k"], rows["time_ratio"], "o", color=color, label=method)
        ax.set_title(f"{path}, batch {batch}", fontsize=10)
        ax.set_xlabel("visual tokens kept K (of 576)")
        ax.set_xticks(sorted(part["k"].unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("prefill time / unpruned prefill time")
    handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=m) for m, c in colors.items()]
    handles += [plt.Line2D([], [], ls="--", color="grey", label="FLOPs ratio (ideal)"),
                plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.2, label=f"up to {factor:g}× the ideal")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Pruned prefill: measured time ratio (dots) against the FLOPs ratio (dashed)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_selectors(table: pd.DataFrame, share: float = TARGETS["selector_share"]) -> Figure:
    """Grouped bars: each selector's cost in % of an unpruned prefill, per K, with the target line."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    n_k = len(table.columns)
    width = 0.8 / n_k
    x = np.arange(len(table))
    for j, column in enumerate(table.columns):
        ax.bar(x + (j - (n_k - 1) / 2) * width, table[column], width, label=column, color=plt.cm.Blues(0.4 + 0.5 * j / max(n_k - 1, 1)))
    ax.axhline(100 * share, color="#d62728", ls="--", lw=1.2, label=f"target: {100 * share:g}%")
    ax.set_xticks(x, table.index, rotation=20, ha="right")
    ax.set_ylabel("% of one unpruned prefill")
    ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(frameon=False, ncol=n_k + 1)
    ax.set_title("Selector cost at N = 576, d = 1024, one image (log scale)")
    fig.tight_layout()
    return fig


def plot_engine(table: pd.DataFrame, ratio: float = TARGETS["engine_ratio"]) -> Figure:
    """Left: samples per second per path, with the target (``ratio`` × bare). Right: peak memory."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = ["#7f7f7f", "#1f77b4", "#9ecae1"][: len(table)]
    left.bar(table["path"], table["samples / s"], color=colors)
    bare = table.loc[table["path"] == "bare", "samples / s"]
    if len(bare):
        left.axhline(ratio * float(bare.iloc[0]), color="#d62728", ls="--", lw=1.2, label=f"target: {100 * ratio:g}% of bare")
        left.legend(frameon=False, loc="lower right")
    left.set_ylabel("questions per second")
    left.set_title("Throughput on the same questions")
    memory = "peak CUDA memory (MB)" if "peak CUDA memory (MB)" in table else "peak RSS (MB)"
    right.bar(table["path"], table[memory], color=colors)
    if "RSS before the run (MB)" in table:
        right.scatter(table["path"], table["RSS before the run (MB)"], color="black", marker="_", s=400, zorder=3,
                      label="before the timed runs")
        right.legend(loc="lower right")
    right.set_ylabel(memory)
    right.set_title("Peak memory of a run")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_book(table: pd.DataFrame, minutes: float = TARGETS["book_minutes"]) -> Figure:
    """Horizontal bars: minutes per build step, and the total against the target."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.5))
    colors = ["#1f77b4" if s != "total" else "#000000" for s in table["step"]]
    ax.barh(table["step"], table["wall (min)"], color=colors)
    ax.axvline(minutes, color="#d62728", ls="--", lw=1.2, label=f"target: {minutes:g} min")
    ax.invert_yaxis()
    ax.set_xlabel("wall time (minutes)")
    ax.legend(frameon=False)
    ax.set_title("Building the default toy book from empty caches")
    fig.tight_layout()
    return fig


def verdict(met: Any) -> str:
    """'met', 'missed' or 'not measured' for a ``check_targets`` row's ``met``."""
    if met is None or (isinstance(met, float) and np.isnan(met)):
        return "not measured"
    return "met" if bool(met) else "missed"
