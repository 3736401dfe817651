"""visprune: visual token pruning for LLaVA-style models, and the metrics to judge it.

Layers, in the order the data flows (DESIGN.md section 2; each imports only the ones before it):

- ``visprune._validation``, ``visprune._paths``: argument checks; where shipped and generated files live
- ``visprune.instrument``: prompt formats, image statistics, the LLaVA wrapper (``instrument.llava``)
- ``visprune.pruning``: the pruning methods, one module each, and their registry (``select``, ``spec``)
- ``visprune.metrics``: calibration, selective prediction, POPE scores, image statistics, CHAIR, bootstrap
- ``visprune.datasets``: readers of POPE, ScienceQA and COCO (CHAIR), and the ``Sample`` type
- ``visprune.toyworld``, ``visprune.toymodel``: the toy world generator and the toy LLaVA
- ``visprune.engine``: configurations, data-set specs, the run cache, the runner, ``python -m visprune``
- ``visprune.book``: analysis, plots and chapter helpers; ``python -m visprune.book`` builds the book
"""

__version__ = "0.1.0"
