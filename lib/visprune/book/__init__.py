"""The book side: analysis of run records, figures, chapter helpers and the book build
(DESIGN.md sections 2 and 7).

- :mod:`.analysis`: summary tables with bootstrap intervals, paired differences, directions and
  the sentences that state them (Study A);
- :mod:`.diversity`: Study B's per-image tables (erank, attention entropy, CHAIR, complexity
  groups, the adaptive threshold) and their comparisons;
- :mod:`.plots`, :mod:`.patch_maps`: figures (one palette: the method registry's colours);
- :mod:`.primer`: the calibration primer's simulations and widgets;
- :mod:`.performance`: the performance chapter's tables from ``benchmarks/results``;
- :mod:`.chapters`: what every chapter does first, and the rules for its parameters;
- :mod:`.build`: executes the chapters with papermill and renders the book
  (``python -m visprune.book``).

The top layer: imports the engine and everything below it; nothing imports it.
"""
