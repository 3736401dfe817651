"""Headline metrics of one run's records, chosen by the data set's task (DESIGN.md sections 5
and 6), and the low answer-mass warning."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from visprune.engine.datasets import dataset_spec

#: A mean answer-set mass below this suggests a prompt or tokenizer mismatch (DESIGN.md section 5).
LOW_ANSWER_MASS = 0.5

# ------------------------------------------------------------------------------ summaries


def summarize(records: pd.DataFrame, n_bins: int = 15, ground_truth: dict | None = None,
              synonyms: Any = None, dataset: str | None = None) -> dict:
    """Headline metrics of one run's records (failed samples are counted, not scored).

    Question answering: n, n_failed, accuracy, ece, mce, brier, aurc, eaurc, mean answer mass;
    POPE adds precision, recall, f1 and yes_ratio (yes = answer index 0). Captions (when
    ``ground_truth`` is given, with the ``synonyms`` table used to build it): chair_s,
    chair_i, recall, length. The task comes from the data set's spec (``dataset``, default: the
    records' ``dataset`` column); records without either are scored as questions, with the POPE
    scores only when every answer set is ("yes", "no").
    """
    from visprune import metrics

    ok = records[records["status"] == "ok"]
    out: dict[str, Any] = {"n": int(len(records)), "n_failed": int((records["status"] != "ok").sum())}
    if ok.empty:
        return out
    if dataset is None and "dataset" in records and records["dataset"].nunique() == 1:
        dataset = str(records["dataset"].iloc[0])
    task = dataset_spec(dataset).task if dataset is not None else None
    if task == "captioning" or (task is None and "caption" in ok and ok["caption"].notna().any()):
        if ground_truth is None:
            raise ValueError("ground_truth: CHAIR needs the ground-truth objects of each image")
        captions = dict(zip(ok["sample_id"].astype(str), ok["caption"]))
        scores = metrics.chair(captions, {i: ground_truth[i] for i in captions}, synonyms=synonyms)
        out.update({k: scores[k] for k in ("chair_s", "chair_i", "recall", "length")})
    else:
        labels = ok["label"].to_numpy(dtype=int)
        widths = ok["probs"].map(len)
        if widths.nunique() == 1:
            probs = np.stack(ok["probs"].map(np.asarray).to_list())
            out["ece"] = metrics.ece(probs, labels, n_bins=n_bins)
            out["mce"] = metrics.mce(probs, labels, n_bins=n_bins)
            out["brier"] = metrics.brier(probs, labels)
        else:
            out.update(_ragged_calibration(ok, labels, n_bins))
        correct = ok["correct"].to_numpy(dtype=bool)
        confidence = ok["confidence"].to_numpy(dtype=float)
        out["accuracy"] = float(correct.mean())
        out["aurc"] = metrics.aurc(confidence, correct)
        out["eaurc"] = metrics.eaurc(confidence, correct)
        out["answer_mass"] = float(ok["answer_mass"].mean())
        message = answer_mass_warning(records)
        if message:
            warnings.warn(message, LowAnswerMassWarning, stacklevel=2)
        if task == "binary" or (task is None and ok["answers"].map(lambda a: list(a) == ["yes", "no"]).all()):
            preds = ok["prediction"].to_numpy(dtype=int)
            out.update(metrics.pope_scores(preds, labels))
    return out


class LowAnswerMassWarning(UserWarning):
    """The model puts little first-token probability on the answer set (DESIGN.md section 5)."""


def answer_mass_warning(records: pd.DataFrame, threshold: float = LOW_ANSWER_MASS) -> str | None:
    """A one-line warning per run whose mean answer-set mass is below ``threshold``, else None.

    The answer-set mass is the full-vocabulary probability of the answer tokens before
    renormalising; a mean below 0.5 means the model mostly wants to say something else first,
    which points to a prompt-format or tokenizer mismatch: the renormalised probabilities then
    describe a small corner of the model's distribution. Runs are named by their ``run`` column
    (and data set) when the records have one.
    """
    if "answer_mass" not in records or records.empty:
        return None
    ok = records[(records["status"] == "ok") & records["answer_mass"].notna()]
    if ok.empty:
        return None
    keys = [c for c in ("dataset", "run") if c in ok.columns]
    groups = ok.groupby(keys, sort=False) if keys else [((), ok)]
    low = []
    for key, group in groups:
        mass = float(group["answer_mass"].mean())
        if mass < threshold:
            name = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))) or "this run"
            low.append(f"{name} ({mass:.2f})")
    if not low:
        return None
    return (f"low answer-set mass in {', '.join(low)}: the mean first-token probability of the answers is "
            f"below {threshold}; the prompt format or tokenizer may not match the model")


def _ragged_calibration(ok: pd.DataFrame, labels: np.ndarray, n_bins: int) -> dict:
    """ECE/MCE/Brier when answer sets differ in size (ScienceQA): pad each probability vector
    with zeros to the widest set. Top-label ECE and MCE only see the largest probability, and
    padded classes carry no probability and are never the label, so both are unchanged by the
    padding; so is the Brier score (a padded class adds (0 - 0)^2)."""
    from visprune import metrics

    width = int(ok["probs"].map(len).max())
    probs = np.zeros((len(ok), width))
    for i, p in enumerate(ok["probs"]):
        probs[i, : len(p)] = p
    return {"ece": metrics.ece(probs, labels, n_bins=n_bins), "mce": metrics.mce(probs, labels, n_bins=n_bins),
            "brier": metrics.brier(probs, labels)}

