"""A LLaVA wrapper that prunes visual tokens, before the language model or inside it (FastV).

This implements the data flow of DESIGN.md section 4 for any llava-hf checkpoint
(``LlavaForConditionalGeneration`` with a CLIP vision tower and a Llama language model)::

    images -> encode_images -> VisionOutput (patch features + CLS attention at the feature layer)
           -> select_tokens -> Selection (K kept visual tokens, or FastV's layer and K)
           -> score     -> first-token distribution over each prompt's answer set (section 5)
           -> generate  -> greedy captions with a KV cache

The vision tower runs once per image; one ``Selection`` serves every prompt on that image
(``image_index`` maps prompts to images: POPE asks six questions about each image).

Conventions (ALGORITHMS.md, "Pruning methods"):

- N visual tokens per image = the patch tokens at ``config.vision_feature_layer``; the CLS token
  is dropped. For ``vision_feature_select_strategy == "full"`` it is dropped too, so every method
  (the unpruned one included) chooses among the same N patch tokens; transformers itself would
  feed N + 1 tokens for such a checkpoint. LLaVA-1.5 uses "default".
- Pre-LLM pruning (any registered selector: "random", "saliency", "scope", "divprune", "adaptive"; or explicit indices):
  only the kept patch features go through the projector (it acts per token, so this equals
  projecting all and indexing), and the prompt holds exactly K visual tokens at consecutive
  positions: the sequence simply is K tokens shorter than the unpruned one.
- "none": all N tokens through the same code path.
- "fastv" (ALGORITHMS.md, "FastV", as the released code does it): all N tokens enter and
  layers 0..L-1 see them all; inside layer L-1 the last prompt token's attention (the
  probabilities layer L-1 computes, mean over heads) picks K, and the others are dropped from
  layer L on (default L = 2; ``ranking="same"`` ranks with layer L's own attention instead, the
  only ranking that allows L = 0). Parameters: ``visprune.pruning.fastv.fastv_params``; the decoder loop consults the method's ``LayerPruner``. The kept tokens
  and everything after them keep their original position ids, and during generation the caches
  of layers >= L only ever hold the kept tokens.
- Batches are left-padded (every prompt's last token sits at the last position) with an
  explicit 4-D causal + padding attention bias and position ids counted over real tokens only,
  so a prompt scores the same alone or in a padded batch.
- The language model's decoder layers are driven here, one by one (``_run_prompt``,
  ``_decode_step``), with the model's own attention kernel (SDPA or eager) left in place;
  the two attention rows the methods need (CLS -> patches in the vision tower, last prompt
  token -> visual tokens in the language model) are recomputed explicitly.
- Probabilities are computed in float32 from the logits, whatever the model's dtype.
"""

from visprune.instrument.llava.checkpoint import CHECKPOINT_FILES, check_checkpoint_dir, default_device, default_dtype
from visprune.instrument.llava.images import PREPROCESS, expand_to_square
from visprune.instrument.llava.outputs import GenerationOutput, LMInputs, ScoreOutput, Selection, VisionOutput
from visprune.instrument.llava.wrapper import PrunedLlava

__all__ = [
    "CHECKPOINT_FILES", "PREPROCESS", "GenerationOutput", "LMInputs", "PrunedLlava", "ScoreOutput", "Selection",
    "VisionOutput", "check_checkpoint_dir", "default_device", "default_dtype", "expand_to_square",
]
