"""visprune: visual token pruning for LLaVA-style models, and the metrics to judge it.

Modules (each named after one concept):

- ``visprune.metrics``     calibration, selective prediction, diversity and hallucination metrics
- ``visprune.instrument.image_stats`` effective rank and attention entropy on batched torch tensors
- ``visprune.pruning``     token selectors (random, saliency, SCOPE, DivPrune, adaptive)
- ``visprune.instrument.prompts``     LLaVA-1.5 prompt formats and answer sets (DESIGN.md section 5)
- ``visprune.instrument.llava``       a LLaVA wrapper that prunes visual tokens (and FastV)
- ``visprune.data``        the toy world and readers for POPE, ScienceQA and COCO/CHAIR
- ``visprune.book``        executes the chapters with papermill and renders the book
"""

__version__ = "0.1.0"
