"""POPE-style scores from predictions: accuracy, precision, recall, F1, yes-ratio (ALGORITHMS.md,
"Metrics"). Conventions: :mod:`visprune.metrics`."""

from __future__ import annotations

from typing import Any

import numpy as np

from visprune import _validation as v

from visprune.instrument.prompts import POPE_ANSWERS

#: Index of "yes" in POPE's answer set ``visprune.instrument.prompts.POPE_ANSWERS == ("yes", "no")``: 0.
POPE_YES: int = POPE_ANSWERS.index("yes")


# ---------------------------------------------------------------------------------------------
# Classification scores (ALGORITHMS.md, "Metrics": accuracy; POPE precision, recall, F1, yes-ratio)
# ---------------------------------------------------------------------------------------------


def _predictions(pred: Any, name: str = "pred") -> np.ndarray:
    """Predicted class indices (n,): ``pred`` itself if 1-D, the row-wise argmax if (n, C) probabilities."""
    if v.holds_bool(pred):  # checked on the input: np.asarray([True, 0]) is an int array
        return v.integer_vector(pred, name)  # raises, naming ``name``
    arr = v.to_numpy(pred, name)
    if arr.ndim == 2:
        _, native = v.probability_matrix(arr, name)
        return np.argmax(native, axis=1)
    return v.integer_vector(arr, name)


def _n_columns(pred: Any) -> int | None:
    """The number of classes when ``pred`` is an (n, C) probability matrix, else None."""
    shape = getattr(pred, "shape", None)
    if shape is None:
        if not isinstance(pred, (list, tuple)) or not pred or not isinstance(pred[0], (list, tuple)):
            return None
        return len(pred[0])
    return int(shape[1]) if len(shape) == 2 else None


def _pred_and_labels(pred: Any, labels: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validated predictions and labels; with (n, C) probabilities the labels must be below C."""
    p = _predictions(pred) if n_classes is None else v.integer_vector(_predictions(pred), "pred", n_classes)
    y = v.integer_vector(labels, "labels", n_classes=n_classes if n_classes is not None else _n_columns(pred))
    v.same_length(pred=p, labels=y)
    return p, y


def _check_positive(positive: Any, n_classes: int | None = None) -> int:
    positive = v.positive_int(positive, "positive", minimum=0)
    if n_classes is not None and positive >= n_classes:
        raise ValueError(f"positive: must be a class index below {n_classes}, got {positive}")
    return positive


def accuracy(pred: Any, labels: Any) -> float:
    """Accuracy ``mean_i [pred_i == label_i]`` (ALGORITHMS.md, "Metrics").

    ``pred``: (n,) predicted class indices, or (n, C) probabilities (the argmax of each row is
    the prediction). ``labels``: (n,) true class indices.

    >>> accuracy([0, 1, 1, 0], [0, 1, 0, 0])
    0.75
    """
    p, y = _pred_and_labels(pred, labels)
    return float(np.mean(p == y))


def _confusion(pred: Any, labels: Any, positive: int) -> tuple[int, int, int, int]:
    p, y = _pred_and_labels(pred, labels)
    positive = _check_positive(positive, _n_columns(pred))
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    return tp, fp, fn, len(p)


def precision(pred: Any, labels: Any, positive: int = POPE_YES) -> float:
    """Precision ``TP / (TP + FP)`` for the class ``positive`` (ALGORITHMS.md, "Metrics").

    For POPE the positive class is "yes", index ``POPE_YES == 0`` of ``("yes", "no")``.
    Returns 0.0 when nothing is predicted positive (scikit-learn's ``zero_division=0``).

    >>> precision([0, 0, 1, 0], [0, 1, 1, 0])   # TP = 2, FP = 1
    0.6666666666666666
    """
    tp, fp, _, _ = _confusion(pred, labels, positive)
    return tp / (tp + fp) if tp + fp > 0 else 0.0


def recall(pred: Any, labels: Any, positive: int = POPE_YES) -> float:
    """Recall ``TP / (TP + FN)`` for the class ``positive`` (default "yes" of POPE).

    Returns 0.0 when no label is positive.

    >>> recall([0, 1, 1, 0], [0, 0, 1, 0])   # TP = 2, FN = 1
    0.6666666666666666
    """
    tp, _, fn, _ = _confusion(pred, labels, positive)
    return tp / (tp + fn) if tp + fn > 0 else 0.0


def f1(pred: Any, labels: Any, positive: int = POPE_YES) -> float:
    """F1 ``2 P R / (P + R)`` for the class ``positive`` (default "yes"); 0.0 when P + R = 0.

    >>> f1([0, 0, 1, 0], [0, 1, 1, 0])   # P = 2/3, R = 1
    0.8
    """
    p = precision(pred, labels, positive)
    r = recall(pred, labels, positive)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def yes_ratio(pred: Any, positive: int = POPE_YES) -> float:
    """Fraction of *predictions* equal to ``positive`` (POPE's yes-ratio; "yes" is index 0).

    >>> yes_ratio([0, 1, 0, 0])
    0.75
    """
    p = _predictions(pred)
    return float(np.mean(p == _check_positive(positive, _n_columns(pred))))


def pope_scores(pred: Any, labels: Any, positive: int = POPE_YES) -> dict[str, float]:
    """POPE's table row: accuracy, precision, recall, F1 (positive = "yes") and yes-ratio.

    ``pred`` and ``labels`` are indices into ``visprune.instrument.prompts.POPE_ANSWERS`` (yes = 0, no = 1),
    or ``pred`` is (n, 2) probabilities in that order.

    Every prediction and label must be 0 or 1 (booleans are rejected: which of yes and no
    would ``True`` be?), and (n, C) probabilities must have C = 2 columns.

    >>> pope_scores([0, 0, 1, 0], [0, 1, 1, 0])["f1"]
    0.8
    """
    n_answers = len(POPE_ANSWERS)
    columns = _n_columns(pred)
    if columns is not None and columns != n_answers:
        raise ValueError(f"pred: POPE probabilities must have {n_answers} columns (yes, no), got {columns}")
    _pred_and_labels(pred, labels, n_classes=n_answers)  # 0 = yes, 1 = no: anything else is an error
    _check_positive(positive, n_answers)
    return {
        "accuracy": accuracy(pred, labels),
        "precision": precision(pred, labels, positive),
        "recall": recall(pred, labels, positive),
        "f1": f1(pred, labels, positive),
        "yes_ratio": yes_ratio(pred, positive),
    }
