"""Metrics for pruned LLaVA runs (ALGORITHMS.md, "Metrics" and "Image statistics").

One function per metric, one module per family (in the order of ALGORITHMS.md):

- :mod:`.pope`, POPE-style scores from predictions: ``accuracy``, ``precision``, ``recall``, ``f1``,
  ``yes_ratio`` and ``pope_scores`` (all five at once).
- :mod:`.calibration`, binned calibration estimators from probabilities over the answer set: ``ece``, ``mce``,
  ``classwise_ece``, ``equal_mass_ece``, ``ece_sweep``, ``debiased_ece``, ``brier`` and ``reliability_table``.
- :mod:`.smooth`, the kernel estimator: ``smooth_ece`` (SmoothECE) and ``smooth_ece_at`` (a fixed bandwidth).
- :mod:`.noise_floor`, what an estimator shows for a perfectly calibrated predictor: ``noise_floor``.
- :mod:`.decomposition`, the Brier score's parts: ``brier_decomposition``.
- :mod:`.temperature`, post-hoc recalibration: ``fit_temperature``, ``temperature_probs``, ``temperature_nll``.
- :mod:`.selective`, selective prediction: ``risk_coverage``, ``aurc`` and ``eaurc``.
- :mod:`.image`, image statistics: ``erank`` and ``attention_entropy`` (validating wrappers around the batched
  torch kernels in ``visprune.instrument.image_stats``).
- :mod:`.chair`, hallucination in captions: ``load_synonyms``, ``caption_objects`` and ``chair``.
- :mod:`.loyalty`, answers that flip against the unpruned model: ``flip_rate`` (with ``wilson_interval``).
- :mod:`.cost`, the language model's analytic prefill cost: ``prefill_flops`` (``layer_macs`` per layer).
- :mod:`.bootstrap`, uncertainty: ``bootstrap_ci`` and ``bootstrap_diff_ci``.

Conventions. Arrays may be NumPy arrays, torch tensors (CPU or GPU) or lists; everything except
``erank`` and ``attention_entropy`` is computed on the CPU in float64. ``probs`` is (n, C): one
row per sample, a probability distribution over that sample's answer set (rows sum to 1).
``labels`` are int class indices into the answer set. The prediction is the argmax of a row (the
first maximum on ties) and the confidence is its probability. Every bad input raises a
``ValueError`` whose message starts with the name of the argument; a metric never returns NaN
for valid input.
"""

from visprune.metrics.bootstrap import bootstrap_ci, bootstrap_diff_ci
from visprune.metrics.cost import layer_macs, prefill_flops
from visprune.metrics.loyalty import flip_rate, wilson_interval
from visprune.metrics.calibration import (bin_edges, bin_index, brier, classwise_ece, debiased_ece, ece, ece_sweep,
                                          equal_mass_ece, mce, reliability_table)
from visprune.metrics.decomposition import brier_decomposition
from visprune.metrics.noise_floor import NoiseFloor, noise_floor
from visprune.metrics.smooth import smooth_ece, smooth_ece_at
from visprune.metrics.temperature import fit_temperature, temperature_nll, temperature_probs
from visprune.metrics.chair import caption_objects, chair, load_synonyms, object_parser
from visprune.metrics.image import attention_entropy, erank
from visprune.metrics.pope import POPE_YES, accuracy, f1, pope_scores, precision, recall, yes_ratio
from visprune.metrics.selective import _ideal_aurc, aurc, eaurc, risk_coverage  # noqa: F401 (_ideal_aurc: tests)

__all__ = [
    "flip_rate", "layer_macs", "prefill_flops", "wilson_interval",
    "POPE_YES", "accuracy", "precision", "recall", "f1", "yes_ratio", "pope_scores", "ece", "mce", "classwise_ece",
    "brier", "reliability_table", "bin_edges", "bin_index", "risk_coverage", "aurc", "eaurc", "erank",
    "attention_entropy", "load_synonyms", "caption_objects", "object_parser", "chair", "bootstrap_ci",
    "bootstrap_diff_ci", "equal_mass_ece", "ece_sweep", "debiased_ece", "smooth_ece", "smooth_ece_at", "noise_floor",
    "NoiseFloor", "brier_decomposition", "fit_temperature", "temperature_probs", "temperature_nll",
]
