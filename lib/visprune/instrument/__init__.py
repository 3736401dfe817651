"""The instrument: what turns an image and a question into a pruned model's answer
distribution (DESIGN.md section 4).

- :mod:`.prompts`: prompt formats and data-set questions;
- :mod:`.image_stats`: effective rank and attention entropy of a batch of images;
- :mod:`.llava`: the LLaVA wrapper that runs the pruning methods (vision tower, selection,
  language model).

The pruning methods themselves, one module each with their registry, belong to this layer too
but live in :mod:`visprune.pruning`, the import path the design notes fix as public
(``from visprune.pruning import select``). The layer imports only :mod:`visprune._validation`
and :mod:`visprune._paths` from the rest of the package.
"""
