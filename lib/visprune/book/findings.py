"""What each Study A chapter's run shows, in sentences computed from its tables (DESIGN.md
section 7): the papers' claims stated as theirs, this run's numbers from its results, agreeing
or not. Each chapter's "What this run shows" cell is one call here."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from visprune.book.analysis import chance_accuracy, format_interval
from visprune.book.verdicts import budget_verdict, format_difference, listing, profile_sentence, row, skill_sentence

__all__ = ["pope_calibration_findings", "scienceqa_calibration_findings", "alpha_sweep_findings", "gap_power_findings",
           "adaptive_findings", "diversity_findings"]

_SAID = {"lower": "lower than unpruned", "higher": "higher than unpruned", "indistinguishable": "interval includes 0"}
_CAUTION = ("Where a claim does not hold here, this run does not support it; with the toy model and these sample "
            "counts, an interval that includes 0 means the run cannot tell the methods apart, not that they are equal.")


def _skill(grid: pd.DataFrame, base: pd.Series, unpruned: str, what: str) -> str:
    chance = chance_accuracy(grid[grid["run"] == unpruned])
    accuracy = format_interval(base["accuracy"], base["accuracy_low"], base["accuracy_high"])
    return skill_sentence(accuracy, int(base["n"]), what, base["accuracy_low"], chance)


def pope_calibration_findings(grid: pd.DataFrame, pooled: pd.DataFrame, diffs: pd.DataFrame, *, unpruned: str,
                              coverage: str, budgets: Sequence[int], profile: Any) -> str:
    """The POPE chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows named
    ``"<label> − unpruned @ <budget>"`` for the coverage configuration, saliency-only and FastV,
    on accuracy and ECE; ``pooled``: the summary over the three splits."""
    base = row(pooled, run=unpruned)

    def diff(name: str, budget: int, metric: str) -> pd.Series:
        return row(diffs, comparison=f"{name} − unpruned @ {budget}", metric=metric)

    lines, n_cov, n_sal, n_fastv = [], 0, 0, 0
    for b in budgets:
        e, a = diff(coverage, b, "ece"), diff(coverage, b, "accuracy")
        s, f = diff("saliency-only", b, "ece"), diff("FastV", b, "accuracy")
        lines.append(f"- **{b} tokens.** {coverage}: ECE {e['a']:.3f} against the unpruned {e['b']:.3f}, difference "
                     f"{format_difference(e)}, {_SAID[e['direction']]}; accuracy difference "
                     f"{format_difference(a)}, {_SAID[a['direction']]}. Saliency-only: ECE difference "
                     f"{format_difference(s)}, {_SAID[s['direction']]}. FastV: accuracy difference "
                     f"{format_difference(f)}, {_SAID[f['direction']]}.")
        n_cov += e["direction"] == "lower" and a["direction"] == "indistinguishable"
        n_sal += s["direction"] == "higher"
        n_fastv += f["direction"] == "lower"
    n = len(budgets)
    return "\n".join([
        profile_sentence(profile) + " " + _skill(grid, base, unpruned, "pooled answers"), "",
        *lines, "",
        f"- *Pure coverage lowers ECE at similar accuracy* (ECE interval below 0, accuracy interval including 0): "
        f"{budget_verdict(n_cov, n)} in this run.",
        f"- *Saliency-only pruning worsens calibration* (ECE interval above 0): {budget_verdict(n_sal, n)} in this run.",
        f"- *FastV degrades badly* (accuracy interval below 0): {budget_verdict(n_fastv, n)} in this run.",
        "", _CAUTION,
    ])


def scienceqa_calibration_findings(grid: pd.DataFrame, summary: pd.DataFrame, diffs: pd.DataFrame, *,
                                   unpruned: str, names: Sequence[str], profile: Any) -> str:
    """The ScienceQA chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows of
    every pruned configuration (``names``, its comparison names) against the unpruned model, on
    accuracy and ECE."""
    base = row(summary, run=unpruned)
    ece_dir = diffs[diffs["metric"] == "ece"].set_index("comparison")["direction"]
    acc_dir = diffs[diffs["metric"] == "accuracy"].set_index("comparison")["direction"]
    lower_ece = [n for n in names if ece_dir[n] == "lower"]
    both = [n for n in lower_ece if acc_dir[n] != "lower"]
    higher_ece = [n for n in names if ece_dir[n] == "higher"]
    lower_acc = [n for n in names if acc_dir[n] == "lower"]
    if names and len(both) == len(names):
        claim = "is supported for every pruned configuration in this run."
    elif both:
        claim = "is supported for some pruned configurations in this run, not for all."
    else:
        claim = ("is not supported by this run: no pruned configuration has an ECE interval below the unpruned "
                 "model's with accuracy held.")
    return "\n".join([
        profile_sentence(profile) + " " + _skill(grid, base, unpruned, "problems"), "",
        f"- Pruned configurations whose ECE is lower than the unpruned model's (interval below 0): "
        f"{len(lower_ece)} of {len(names)} ({listing(lower_ece)}).",
        f"- Of those, accuracy not lower (interval not below 0): {len(both)} ({listing(both)}).",
        f"- ECE higher than unpruned: {len(higher_ece)} ({listing(higher_ece)}); accuracy lower than unpruned: "
        f"{len(lower_acc)} ({listing(lower_acc)}).", "",
        "The paper's claim (pruning lowers ECE with stable accuracy) " + claim,
    ])


def _pooled_skill(grid: pd.DataFrame, pooled: pd.DataFrame, profile: Any) -> str:
    unpruned = pooled.loc[pooled["method"] == "none", "run"].item()
    return profile_sentence(profile) + " " + _skill(grid, row(pooled, run=unpruned), unpruned, "pooled answers")


def alpha_sweep_findings(grid: pd.DataFrame, pooled: pd.DataFrame, diffs: pd.DataFrame, scope: pd.DataFrame, *,
                         budgets: Sequence[int], alphas: Sequence[float], profile: Any) -> str:
    """The alpha-sweep chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows
    "... @ <budget>" of SCOPE at the smallest alpha minus the largest, on ECE and accuracy;
    ``scope``: the pooled summary rows of every SCOPE configuration (``budget``, ``alpha``, ``ece``)."""
    words = {"lower": "interval below 0", "higher": "interval above 0", "indistinguishable": "interval includes 0"}
    lines, n_lower, n_monotone = [], 0, 0
    grid_text = ", ".join(f"{a:g}" for a in sorted(alphas))
    for b in budgets:
        at_b = diffs[diffs["comparison"].str.endswith(f"@ {b}")]
        e, a = row(at_b, metric="ece"), row(at_b, metric="accuracy")
        curve = scope[scope["budget"] == b].sort_values("alpha")["ece"].to_numpy()
        monotone = bool((curve[1:] >= curve[:-1]).all())  # ECE never falls as alpha grows
        n_lower += e["direction"] == "lower"
        n_monotone += monotone
        lines.append(f"- **{b} tokens.** ECE at α = {min(alphas):g}: {e['a']:.3f}; at α = {max(alphas):g}: {e['b']:.3f}; "
                     f"difference {format_difference(e)} ({words[e['direction']]}). Accuracy difference "
                     f"{format_difference(a)}. ECE {'rises steadily' if monotone else 'does not rise steadily'} "
                     f"with α over the grid {grid_text}.")
    n = len(budgets)
    if n_lower == n:
        claim = "This run supports the paper's claim at every budget."
    else:
        claim = ("This run does not support the claim that lowering α improves calibration at every budget."
                 + (" It does at some budgets." if n_lower else ""))
    return "\n".join([
        _pooled_skill(grid, pooled, profile), "", *lines, "",
        f"Lowering α lowers ECE with an interval below 0 at {n_lower} of {n} budgets, and the ECE point estimates "
        f"rise steadily with α at {n_monotone} of {n} budgets. " + claim,
    ])


def gap_power_findings(grid: pd.DataFrame, pooled: pd.DataFrame, best_table: pd.DataFrame, *, profile: Any) -> str:
    """The gap-power chapter's findings (markdown). ``best_table``: one row per (alpha, budget)
    cell with ``best p``, ``ECE at best p``, ``ECE at p = 1``, ``ECE difference [95% CI]`` and
    ``ECE direction`` ("default best", "lower", ...)."""
    n_cells = len(best_table)
    n_default = int((best_table["ECE direction"] == "default best").sum())
    n_better = int((best_table["ECE direction"] == "lower").sum())
    lines = []
    for r in best_table.to_dict("records"):
        cell = f"- α = {r['alpha']:g}, {r['budget']:g} tokens: "
        if r["ECE direction"] == "default best":
            lines.append(cell + f"lowest ECE at the default p = 1 ({r['ECE at p = 1']:.3f}).")
        else:
            lines.append(cell + f"lowest ECE at p = {r['best p']:g}, {r['ECE at best p']:.3f} against "
                         f"{r['ECE at p = 1']:.3f} at p = 1; difference {r['ECE difference [95% CI]']}.")
    if n_better:
        claim = "So in this run the default is not always the best exponent, as the paper reports."
    else:
        claim = ("So this run does not show the default to be beaten beyond noise: "
                 + ("another p has a lower point estimate in some cells, but its interval includes 0."
                    if n_default < n_cells else "p = 1 is the best exponent in every cell."))
    return "\n".join([
        _pooled_skill(grid, pooled, profile), "", *lines, "",
        f"The default p = 1 has the lowest ECE in {n_default} of {n_cells} (α, budget) cells. Another p is better "
        f"with an interval below 0 in {n_better} of {n_cells}. " + claim,
    ])


def adaptive_findings(per_image: pd.DataFrame, paired: pd.DataFrame, summary: pd.DataFrame, *,
                      targets: Sequence[tuple[str, str, bool]], budgets: Sequence[int],
                      tau_max: float) -> tuple[str, pd.DataFrame]:
    """The adaptive chapter's findings: (markdown, the tally of verdicts per data set, metric and
    method). ``per_image``: one row per image with ``erank_image`` and ``tau``; ``paired``: paired
    differences (adaptive minus each other method) with ``dataset``, ``metric``, ``versus``;
    ``targets``: (data set, metric, higher is better) of the best-per-budget line."""
    from visprune.book.diversity import spearman
    from visprune.book.verdicts import verdict

    tau_rho = spearman(per_image["erank_image"], per_image["tau"])
    at_cap = float(np.isclose(per_image["tau"], tau_max).mean())
    tally = paired.assign(outcome=[verdict(r, r["metric"]) for _, r in paired.iterrows()])
    tally = (tally.groupby(["dataset", "metric", "versus"])["outcome"].value_counts().unstack(fill_value=0)
             .reindex(columns=["better", "no clear difference", "worse"], fill_value=0))
    n_better, n_worse, n_total = int(tally["better"].sum()), int(tally["worse"].sum()), int(tally.to_numpy().sum())
    best = []
    for dataset, metric, higher in targets:
        sub = summary[(summary["dataset"] == dataset) & (summary["method"] != "none")]
        pick = sub.loc[sub.groupby("budget")[metric].idxmax() if higher else sub.groupby("budget")[metric].idxmin()]
        best.append(f"{dataset} ({metric}): " + ", ".join(f"{m} at {b}" for b, m in zip(pick["budget"], pick["method"])))
    text = f"""
These are toy-world results; "better" and "worse" mean the 95% paired bootstrap interval excludes 0.

- **The threshold.** tau ranged from {per_image['tau'].min():.3f} to {per_image['tau'].max():.3f} over
  {len(per_image)} images (Spearman correlation with the image's erank {tau_rho:.2f}; {at_cap:.0%} of the images
  clipped at tau_max = {tau_max}).
- **Adaptive against the others**: of {n_total} paired comparisons ({tally.index.get_level_values(0).nunique()} data
  sets x {tally.index.get_level_values(2).nunique()} other methods x {len(budgets)} budgets), the adaptive rule is
  clearly better in {n_better}, clearly worse in {n_worse}, and not distinguishable in the rest (table below: counts
  of budgets per data set and method).
- **Best point estimate per budget**: {"; ".join(best)}.

The paper reports consistent gains from image-aware adjustments. Comparisons where the adaptive rule is clearly
better support that on this toy model, clearly worse ones contradict it, and the rest cannot tell at this sample size.
"""
    return text, tally


def diversity_findings(records: pd.DataFrame, erank: pd.DataFrame, paired: pd.DataFrame, group_diff: pd.DataFrame,
                       correlations: pd.DataFrame, reference: dict, *, n_images: int, methods: Sequence[str],
                       budgets: Sequence[int], complexity_by: str, threshold: float, n_bootstrap: int,
                       seed: int) -> str:
    """The attention-versus-diversity chapter's findings (markdown, Study B).

    ``records``: captioning records with ``erank_kept``; ``erank``: the erank table per method
    and budget (``erank_kept``, ``kept_share``); ``paired``: DivPrune minus saliency per budget
    (``metric``, ``budget``); ``group_diff``: the same per complexity group; ``correlations``:
    attention entropy against the image's erank, then against its object count; ``reference``:
    the unpruned model's CHAIR_S, CHAIR_I, recall and length.
    """
    from visprune.book.diversity import paired_comparison
    from visprune.book.verdicts import agreement, count_sides, describe_difference

    kept_diff = {other: paired_comparison(records, "divprune", other, "erank_kept", by=("budget",),
                                          n_bootstrap=n_bootstrap, seed=seed)
                 for other in ("saliency", "random") if other in methods}
    diversity_lines = []
    for b in budgets:
        d = row(erank, method="divprune", budget=b)
        vs = "; ".join(f"minus {o}: {describe_difference(row(t, budget=b), 2)}" for o, t in kept_diff.items())
        diversity_lines.append(f"  - {b} tokens: erank {d['erank_kept']:.2f}, {d['kept_share']:.0%} of the image's ({vs})")
    if all(count_sides(t)["above"] == len(t) for t in kept_diff.values()):
        kept_verdict = (f"DivPrune keeps clearly more diversity than {' and '.join(kept_diff)} at every budget, so this "
                        "run does not reproduce the paper's finding that diversity-based pruning keeps less diversity "
                        "than intended")
    else:
        kept_verdict = ("DivPrune is not clearly above every other method at every budget; where it is not, this run "
                        "supports the paper's finding that diversity-based pruning keeps less diversity than intended")
    chair_i_diff = paired[paired["metric"] == "chair_i"]
    halluc = "; ".join(f"{int(r_['budget'])} tokens {describe_difference(r_)}" for _, r_ in chair_i_diff.iterrows())
    group_text, group_verdict = [], []
    for g, expected in (("simple", "above"), ("complex", "below")):
        sub = group_diff[(group_diff["metric"] == "chair_i") & (group_diff["complexity"] == g)]
        group_text.append(f"  - {g} images: " + "; ".join(f"{int(r_['budget'])} tokens {describe_difference(r_)}"
                                                        for _, r_ in sub.iterrows()))
        group_verdict.append(f"on {g} images this run {agreement(count_sides(sub), expected)}")
    ent, ent_obj = correlations.iloc[0], correlations.iloc[1]
    nl = "\n"
    return f"""
These are toy-world results ({n_images} captioned images; intervals are 95% paired bootstrap intervals).

- **Diversity kept by DivPrune** (erank of its kept tokens, and its difference from the other methods on the same images):
{nl.join(diversity_lines)}

  {kept_verdict}.
- **Hallucination, DivPrune minus saliency (CHAIR_I):** {halluc}. The paper reports more hallucination for
  diversity-based pruning (differences above 0); this run {agreement(count_sides(chair_i_diff), "above")}.
- **Simple versus complex images** (split by {complexity_by} at {threshold:.3g}; CHAIR_I, DivPrune minus saliency;
  the paper implies above 0 on simple and below 0 on complex images):
{nl.join(group_text)}

  In short, {group_verdict[0]}; {group_verdict[1]}.
- **Attention entropy:** Spearman correlation with the image's erank {ent['spearman']:.2f} [{ent['low']:.2f}, {ent['high']:.2f}],
  with its object count {ent_obj['spearman']:.2f} [{ent_obj['low']:.2f}, {ent_obj['high']:.2f}].
- **Unpruned reference:** CHAIR_S {reference['chair_s']:.3f}, CHAIR_I {reference['chair_i']:.3f},
  recall {reference['recall']:.3f}, {reference['length']:.1f} words per caption.
"""
