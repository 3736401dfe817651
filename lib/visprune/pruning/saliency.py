"""Saliency-only: the K tokens with the largest CLS attention (ALGORITHMS.md, "Saliency-only")."""

from __future__ import annotations

from visprune.pruning._numerics import _descending_order
from visprune.pruning.registry import register


@register("saliency", label="saliency-only", color="#e6550d", source="https://github.com/Theia-4869/FasterVLM",
          convention="K tokens enter the language model", selector_flops=lambda n, k, d: 0.0)
def saliency_select(features, saliency, k):
    """The K tokens with the largest CLS attention (ALGORITHMS.md, "Saliency-only", as in FasterVLM).

    Ties are broken by the lower token index (a stable descending sort). Only exact ties:
    the sort compares the saliency values exactly, so its result is the same on every CPU and
    GPU for the same input. Unlike SCOPE's scores and DivPrune's distances, saliency is not the
    output of a GEMM over duplicate rows, so it has no structural near-ties made by rounding
    here; its own rounding happens upstream, in the model, where no selector can undo it. (A
    tolerance in a sort would not be transitive.)
    """
    return _descending_order(saliency)[:, :k]


# ----------------------------------------------------------------------------------------------
# SCOPE
