"""What each Study A chapter's run shows, in sentences computed from its tables (DESIGN.md
section 7): the papers' claims stated as theirs, this run's numbers from its results, agreeing
or not. Each chapter's "What this run shows" cell is one call here."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from visprune.book.analysis import chance_accuracy, format_interval
from visprune.book.estimators import ESTIMATORS, SHORT, floor_sentence
from visprune.book.verdicts import budget_verdict, format_difference, listing, profile_sentence, row, skill_sentence

__all__ = ["pope_calibration_findings", "scienceqa_calibration_findings", "alpha_sweep_findings", "gap_power_findings",
           "adaptive_findings", "diversity_findings", "recalibration_findings"]

_SAID = {"lower": "lower than unpruned", "higher": "higher than unpruned", "indistinguishable": "interval includes 0"}
_CAUTION = ("Where a claim does not hold here, this run does not support it; with the toy model and these sample "
            "counts, an interval that includes 0 means the run cannot tell the methods apart, not that they are equal.")


def _skill(grid: pd.DataFrame, base: pd.Series, unpruned: str, what: str) -> str:
    chance = chance_accuracy(grid[grid["run"] == unpruned])
    accuracy = format_interval(base["accuracy"], base["accuracy_low"], base["accuracy_high"])
    return skill_sentence(accuracy, int(base["n"]), what, base["accuracy_low"], chance)


def _disagreements(where: Sequence[tuple[str, str, str]]) -> str:
    """The sentence naming where binned ECE and SmoothECE disagree: ``where`` lists (what, the
    ECE direction, the SmoothECE direction)."""
    split = [f"{what} (binned ECE: {_SAID[e]}; SmoothECE: {_SAID[sm]})" for what, e, sm in where if e != sm]
    if not split:
        return "Binned ECE and SmoothECE agree on the direction of every difference judged here."
    return "Binned ECE and SmoothECE disagree on " + "; ".join(split) + "."


def pope_calibration_findings(grid: pd.DataFrame, pooled: pd.DataFrame, diffs: pd.DataFrame, *, unpruned: str,
                              coverage: str, budgets: Sequence[int], profile: Any, floors: pd.DataFrame | None = None) -> str:
    """The POPE chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows named
    ``"<label> − unpruned @ <budget>"`` for the coverage configuration, saliency-only and FastV,
    on accuracy, ECE and SmoothECE (``smece``); ``pooled``: the summary over the three splits;
    ``floors``: :func:`visprune.book.estimators.floor_table` of the runs, when shown. Each
    calibration claim is judged on binned ECE and on SmoothECE."""
    base = row(pooled, run=unpruned)

    def diff(name: str, budget: int, metric: str) -> pd.Series:
        return row(diffs, comparison=f"{name} − unpruned @ {budget}", metric=metric)

    lines, where = [], []
    n_cov, n_sal, n_fastv = {m: 0 for m in ESTIMATORS}, {m: 0 for m in ESTIMATORS}, 0
    for b in budgets:
        a, f = diff(coverage, b, "accuracy"), diff("FastV", b, "accuracy")
        text = [f"- **{b} tokens.**"]
        for m, name in ESTIMATORS.items():
            e, s = diff(coverage, b, m), diff("saliency-only", b, m)
            text.append(f"{coverage}: {name} {e['a']:.3f} against the unpruned {e['b']:.3f}, difference "
                        f"{format_difference(e)}, {_SAID[e['direction']]}; saliency-only: {name} difference "
                        f"{format_difference(s)}, {_SAID[s['direction']]}.")
            n_cov[m] += e["direction"] == "lower" and a["direction"] == "indistinguishable"
            n_sal[m] += s["direction"] == "higher"
        for who in (coverage, "saliency-only"):
            where.append((f"{who} at {b} tokens", diff(who, b, "ece")["direction"], diff(who, b, "smece")["direction"]))
        text.append(f"Accuracy difference of {coverage}: {format_difference(a)}, {_SAID[a['direction']]}. FastV: accuracy "
                    f"difference {format_difference(f)}, {_SAID[f['direction']]}.")
        lines.append(" ".join(text))
        n_fastv += f["direction"] == "lower"
    n = len(budgets)

    def judged(counts: dict) -> str:
        return "; ".join(f"{name} {budget_verdict(counts[m], n)}" for m, name in ESTIMATORS.items())

    return "\n".join([
        profile_sentence(profile) + " " + _skill(grid, base, unpruned, "pooled answers"), "",
        *lines, "",
        f"- *Pure coverage lowers ECE at similar accuracy* (calibration interval below 0, accuracy interval including 0): "
        f"{judged(n_cov)} in this run.",
        f"- *Saliency-only pruning worsens calibration* (calibration interval above 0): {judged(n_sal)} in this run.",
        f"- *FastV degrades badly* (accuracy interval below 0): {budget_verdict(n_fastv, n)} in this run.",
        "", _disagreements(where), *([floor_sentence(floors)] if floors is not None else []),
        "", _CAUTION,
    ])


def scienceqa_calibration_findings(grid: pd.DataFrame, summary: pd.DataFrame, diffs: pd.DataFrame, *,
                                   unpruned: str, names: Sequence[str], profile: Any,
                                   floors: pd.DataFrame | None = None) -> str:
    """The ScienceQA chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows of
    every pruned configuration (``names``, its comparison names) against the unpruned model, on
    accuracy, ECE and SmoothECE; the claim is judged on both estimators."""
    base = row(summary, run=unpruned)
    acc_dir = diffs[diffs["metric"] == "accuracy"].set_index("comparison")["direction"]
    lines, supported, where = [], {}, []
    for m, name in ESTIMATORS.items():
        cal_dir = diffs[diffs["metric"] == m].set_index("comparison")["direction"]
        lower = [n for n in names if cal_dir[n] == "lower"]
        both = [n for n in lower if acc_dir[n] != "lower"]
        higher = [n for n in names if cal_dir[n] == "higher"]
        supported[m] = len(both)
        lines += [f"- {name}: lower than the unpruned model's (interval below 0) for {len(lower)} of {len(names)} "
                  f"pruned configurations ({listing(lower)}); of those, accuracy not lower: {len(both)} ({listing(both)}); "
                  f"higher than unpruned: {len(higher)} ({listing(higher)})."]
    ece_dir = diffs[diffs["metric"] == "ece"].set_index("comparison")["direction"]
    sm_dir = diffs[diffs["metric"] == "smece"].set_index("comparison")["direction"]
    where = [(n, ece_dir[n], sm_dir[n]) for n in names]
    lower_acc = [n for n in names if acc_dir[n] == "lower"]

    def claim(count: int) -> str:
        if names and count == len(names):
            return "supported for every pruned configuration"
        if count:
            return "supported for some pruned configurations, not for all"
        return "not supported (no pruned configuration has a lower interval with accuracy held)"

    return "\n".join([
        profile_sentence(profile) + " " + _skill(grid, base, unpruned, "problems"), "",
        *lines, f"- Accuracy lower than unpruned: {len(lower_acc)} ({listing(lower_acc)}).", "",
        "The paper's claim (pruning lowers ECE with stable accuracy) is, in this run, "
        + "; ".join(f"{claim(supported[m])} by {name}" for m, name in ESTIMATORS.items()) + ".",
        "", _disagreements(where), *([floor_sentence(floors)] if floors is not None else []),
    ])


def _pooled_skill(grid: pd.DataFrame, pooled: pd.DataFrame, profile: Any) -> str:
    unpruned = pooled.loc[pooled["method"] == "none", "run"].item()
    return profile_sentence(profile) + " " + _skill(grid, row(pooled, run=unpruned), unpruned, "pooled answers")


def alpha_sweep_findings(grid: pd.DataFrame, pooled: pd.DataFrame, diffs: pd.DataFrame, scope: pd.DataFrame, *,
                         budgets: Sequence[int], alphas: Sequence[float], profile: Any) -> str:
    """The alpha-sweep chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows
    "... @ <budget>" of SCOPE at the smallest alpha minus the largest, on accuracy, ECE and
    SmoothECE; ``scope``: the pooled summary rows of every SCOPE configuration (``budget``,
    ``alpha``, ``ece``, ``smece``). The claim is judged on both estimators."""
    words = {"lower": "interval below 0", "higher": "interval above 0", "indistinguishable": "interval includes 0"}
    lines, where = [], []
    n_lower, n_monotone = {m: 0 for m in ESTIMATORS}, {m: 0 for m in ESTIMATORS}
    grid_text = ", ".join(f"{a:g}" for a in sorted(alphas))
    for b in budgets:
        at_b = diffs[diffs["comparison"].str.endswith(f"@ {b}")]
        a = row(at_b, metric="accuracy")
        text = [f"- **{b} tokens.**"]
        for m, name in ESTIMATORS.items():
            e = row(at_b, metric=m)
            curve = scope[scope["budget"] == b].sort_values("alpha")[m].to_numpy()
            monotone = bool((curve[1:] >= curve[:-1]).all())  # the estimate never falls as alpha grows
            n_lower[m] += e["direction"] == "lower"
            n_monotone[m] += monotone
            text.append(f"{name} at α = {min(alphas):g}: {e['a']:.3f}; at α = {max(alphas):g}: {e['b']:.3f}; difference "
                        f"{format_difference(e)} ({words[e['direction']]}); it "
                        f"{'rises steadily' if monotone else 'does not rise steadily'} with α over the grid {grid_text}.")
        where.append((f"{b} tokens", row(at_b, metric="ece")["direction"], row(at_b, metric="smece")["direction"]))
        text.append(f"Accuracy difference {format_difference(a)}.")
        lines.append(" ".join(text))
    n = len(budgets)
    verdicts = []
    for m, name in ESTIMATORS.items():
        if n_lower[m] == n:
            verdicts.append(f"by {name}, this run supports the paper's claim at every budget")
        else:
            verdicts.append(f"by {name}, this run does not support it at every budget"
                            + (f" (it does at {n_lower[m]} of {n})" if n_lower[m] else ""))
    counts = "; ".join(f"{name}: interval below 0 at {n_lower[m]} of {n} budgets, point estimates rising steadily "
                       f"with α at {n_monotone[m]} of {n}" for m, name in ESTIMATORS.items())
    return "\n".join([
        _pooled_skill(grid, pooled, profile), "", *lines, "",
        f"Lowering α lowers calibration error ({counts}). The claim that lowering α improves calibration: "
        + "; ".join(verdicts) + ".", "", _disagreements(where),
    ])


def gap_power_findings(grid: pd.DataFrame, pooled: pd.DataFrame, best_table: pd.DataFrame, *, profile: Any) -> str:
    """The gap-power chapter's findings (markdown). ``best_table``:
    :func:`visprune.book.estimators.best_parameter_table` over (alpha, budget) cells with the
    default p = 1, for binned ECE and SmoothECE; the claim is judged on both."""
    n_cells = len(best_table)
    lines, summary, better = [], [], {}
    for m in ESTIMATORS:
        name = SHORT[m]
        n_default = int((best_table[f"{name} direction"] == "default best").sum())
        better[m] = int((best_table[f"{name} direction"] == "lower").sum())
        summary.append(f"By {ESTIMATORS[m]}, the default p = 1 is lowest in {n_default} of {n_cells} (α, budget) cells "
                       f"and another p is lower with an interval below 0 in {better[m]} of {n_cells}.")
    for r in best_table.to_dict("records"):
        text = [f"- α = {r['alpha']:g}, {r['budget']:g} tokens:"]
        for m in ESTIMATORS:
            name = SHORT[m]
            if r[f"{name} direction"] == "default best":
                text.append(f"{name} lowest at the default p = 1 ({r[f'{name} at p = 1']:.3f}).")
            else:
                text.append(f"{name} lowest at p = {r[f'best p ({name})']:g}, {r[f'{name} at best p']:.3f} against "
                            f"{r[f'{name} at p = 1']:.3f} at p = 1; difference {r[f'{name} difference [95% CI]']}.")
        lines.append(" ".join(text))
    claims = []
    for m in ESTIMATORS:
        if better[m]:
            claims.append(f"by {ESTIMATORS[m]} the default is not always the best exponent, as the paper reports")
        else:
            claims.append(f"by {ESTIMATORS[m]} the default is not beaten beyond noise")
    disagree = [f"α = {r['alpha']:g}, {r['budget']:g} tokens" for r in best_table.to_dict("records")
                if (r["ECE direction"] == "lower") != (r["SmoothECE direction"] == "lower")]
    return "\n".join([
        _pooled_skill(grid, pooled, profile), "", *lines, "", " ".join(summary),
        "So in this run " + "; ".join(claims) + ".", "",
        ("The two estimators disagree on whether the default is beaten in: " + ", ".join(disagree) + "."
         if disagree else "The two estimators agree on whether the default is beaten in every cell."),
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


def recalibration_findings(studies: Sequence[Any], *, profile: Any) -> str:
    """The recalibration chapter's findings (markdown), from its studies
    (:class:`visprune.book.recalibration.Study`): per task, how many pruned configurations were
    over-confident relative to the unpruned model (a larger fitted T), how many ECE and SmoothECE
    differences against the unpruned model existed before recalibration and how many survive
    it, and how far AURC moved."""
    from visprune.book.recalibration import survival_counts

    lines, total_effects, total_survived = [profile_sentence(profile), ""], 0, 0
    for study in studies:
        t = study.temperatures.set_index("run")["temperature"]
        base = float(t[study.unpruned])
        pruned = [c[1] for c in study.comparisons]
        hotter = sum(float(t[r]) > base for r in pruned)
        lines.append(f"**{study.name}.** The unpruned model's fitted temperature is {base:.2f}; {hotter} of "
                     f"{len(pruned)} pruned configurations need a higher one (more over-confident than the unpruned "
                     f"model), with T from {min(float(t[r]) for r in pruned):.2f} to {max(float(t[r]) for r in pruned):.2f}.")
        for metric, name in (("ece", "ECE"), ("smece", "SmoothECE")):
            c = survival_counts(study.survival, metric)
            total_effects += c["effects"]
            total_survived += c["survived"]
            part = study.survival[study.survival["metric"] == metric]
            kept = [f"{r.comparison} ({_SAID[r.after_direction]})" for r in part.itertuples() if r.survives is True]
            lines.append(f"- {name}: {c['effects']} of {c['comparisons']} differences against the unpruned model had an "
                         f"interval excluding 0 before recalibration; {c['survived']} still do after it, on the same "
                         f"side ({listing(kept)}), {c['lost']} do not; {c['new']} appear only after it.")
        lines.append(f"- AURC moved by at most {study.aurc_change():.4f} (temperature scaling keeps the order of each "
                     "sample's answers, not exactly the order of samples by confidence).")
        lines.append("")
    if total_effects == 0:
        verdict = "No calibration difference against the unpruned model was resolved before recalibration, so none can survive it."
    elif total_survived == 0:
        verdict = ("None of the calibration differences survives recalibration: in this run, what pruning does to ECE is "
                   "a shift of the confidence scale that one fitted temperature removes.")
    elif total_survived == total_effects:
        verdict = ("Every calibration difference survives recalibration: in this run pruning changes more than the "
                   "confidence scale, and one temperature does not undo it.")
    else:
        verdict = (f"{total_survived} of {total_effects} calibration differences (ECE and SmoothECE counted separately) "
                   "survive recalibration: part of pruning's effect is a shift of the confidence scale, part is not.")
    lines.append(f"**Does pruning's calibration survive recalibration?** {verdict}")
    lines += ["", _CAUTION]
    return "\n".join(lines)
