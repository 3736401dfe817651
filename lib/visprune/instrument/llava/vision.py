"""The vision side of the wrapper: pixels, the vision tower, and the choice of kept tokens
(DESIGN.md section 4; ALGORITHMS.md, "Pruning methods")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from visprune.instrument.llava.images import PREPROCESS, _as_rgb, _cls_attention, expand_to_square
from visprune.instrument.llava.outputs import Selection, VisionOutput
from visprune import pruning as methods
from visprune.pruning import FEATURE_SPACES, PROMPT_INPUTS, VISION_INPUTS, spec as method_spec


class VisionMixin:
    """Part of :class:`~visprune.instrument.llava.PrunedLlava` (see its docstring)."""

    @property
    def pad_colour(self) -> tuple[int, ...]:
        """The square canvas colour of ``preprocess="pad"``: the processor's mean, in 0..255.

        As LLaVA's ``tuple(int(x * 255) for x in image_processor.image_mean)`` (truncated, not rounded).
        """
        mean = getattr(self.processor.image_processor, "image_mean", None)
        if mean is None:
            raise ValueError("processor: the image processor has no image_mean; use preprocess='crop'")
        mean = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
        return tuple(int(x * 255) for x in mean)

    def pixel_values(self, images: Any, preprocess: str = "pad") -> torch.Tensor:
        """Images -> (B, 3, H, W) pixel values on the model's device (DESIGN.md section 5).

        ``images``: a PIL image, an (H, W, 3) uint8 array, or a list of them; a (B, 3, H, W)
        tensor is taken as pixel values already. ``preprocess``:

        - ``"pad"`` (default; LLaVA-1.5's evaluation, ``image_aspect_ratio: pad``): each image
          in RGB is pasted centred on a square of side max(w, h) filled with ``pad_colour``
          (:func:`expand_to_square`), then goes through the checkpoint's image processor, whose
          resize and centre crop then keep the whole image;
        - ``"crop"``: the image processor alone (shortest edge resized, centre crop: the parts
          of a non-square image beyond the central square are cut away).
        """
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess: expected one of {', '.join(PREPROCESS)}, got {preprocess!r}")
        if isinstance(images, torch.Tensor):
            if images.dim() != 4:
                raise ValueError(f"images: a pixel tensor must be (B, 3, H, W), got shape {tuple(images.shape)}")
            pixels = images
        else:
            batch = list(images) if isinstance(images, (list, tuple)) else [images]
            if not batch:
                raise ValueError("images: got an empty list")
            if preprocess == "pad":
                colour = self.pad_colour
                batch = [expand_to_square(_as_rgb(im), colour) for im in batch]
            pixels = self.processor.image_processor(images=batch, return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- vision

    def _encoder_layers(self) -> nn.ModuleList:
        tower = self.model.model.vision_tower
        body = getattr(tower, "vision_model", tower)  # CLIPVisionModel or its inner transformer
        return body.encoder.layers

    @torch.inference_mode()
    def encode_images(self, images: Any, preprocess: str = "pad") -> VisionOutput:
        """Run the vision tower once per image: patch features and CLS attention at the feature layer.

        ``images``: PIL images / arrays (prepared by ``pixel_values(images, preprocess)``:
        ``"pad"``, LLaVA-1.5's square padding, by default, or ``"crop"``) or a (B, 3, H, W)
        pixel tensor. The features are ``hidden_states[vision_feature_layer]``
        without CLS (as LLaVA feeds its projector). The CLS attention belongs to the encoder
        layer that produced them (``hidden_states[l]`` is the output of layer l-1): its input
        ``hidden_states[l-1]`` goes through that layer's first LayerNorm and q/k projections,
        and only the CLS query's softmax row is formed (summed over heads), so the tower keeps
        its fast attention kernel. The same pass gives the CLS token's feature
        (``cls_feature``) and the layer's head-averaged keys (``keys``), which VisionZip reads.
        """
        pixels = self.pixel_values(images, preprocess)
        tower = self.model.model.vision_tower
        out = tower(pixels, output_hidden_states=True)
        hidden = out.hidden_states  # n_layers + 1 tensors (B, 1 + N, d): embeddings, then each layer
        n = len(hidden)
        layer = int(self.config.vision_feature_layer)
        if not -n <= layer < n:
            raise ValueError(f"config.vision_feature_layer={layer} is out of range for {n - 1} vision layers")
        index = layer % n
        if index == 0:
            raise ValueError(
                "config.vision_feature_layer selects the embedding output, which no attention layer "
                "produced; CLS attention needs a layer >= 1 (LLaVA-1.5 uses -2)"
            )
        features = hidden[index][:, 1:]  # (B, N, d) CLS dropped
        encoder_layer = self._encoder_layers()[index - 1]
        cls_attention, keys = _cls_attention(encoder_layer, hidden[index - 1])  # (B, N), (B, 1 + N, head_dim)
        if features.shape[1] != self.num_visual_tokens:
            raise ValueError(
                f"images: got {features.shape[1]} patches, the config implies {self.num_visual_tokens}; "
                "use the checkpoint's image processor"
            )
        return VisionOutput(features=features, cls_attention=cls_attention, grid_size=self.grid_size,
                            cls_feature=hidden[index][:, 0], keys=keys)

    def _as_vision(self, vision: Any) -> VisionOutput:
        if isinstance(vision, VisionOutput):
            if vision.num_tokens != self.num_visual_tokens:
                raise ValueError(
                    f"vision: has {vision.num_tokens} tokens per image, the model uses {self.num_visual_tokens}"
                )
            return vision
        return self.encode_images(vision)

    # ---------------------------------------------------------------- selection

    @torch.inference_mode()
    def select_tokens(
        self,
        vision: VisionOutput,
        method: str,
        k: int | None = None,
        feature_space: str | None = None,
        **params: Any,
    ) -> Selection:
        """Choose the visual tokens to keep for each image (ALGORITHMS.md, "Pruning methods").

        ``method`` is any registered method (``visprune.pruning.available_methods()``):

        - ``"none"``: all N tokens (``k`` must be None or N).
        - an in-LLM method (``"fastv"``): nothing is chosen here; the method's parameters are
          validated and completed (``spec.function(**params, n_layers=...)``) and kept with ``k``
          for the language model to use per prompt (``keep`` is None).
        - a pre-LLM selector (``"random"``, ``"saliency"``, ``"scope"``, ``"divprune"``,
          ``"adaptive"``, ...): ``methods.select(method, features, cls_attention, k, **params)``
          on float32 copies (``return_info=True`` keeps the selector's diagnostics in
          ``Selection.info``). ``feature_space`` picks the features the selector sees:
          ``"vision"`` (the vision features X) or ``"projected"`` (the projector's outputs, the
          language model's inputs); the default is the method's declared one ("projected" for
          DivPrune, as its released code does; ALGORITHMS.md, "DivPrune"). ``Selection.params``
          records the feature space used.
        """
        method_ = method_spec(method)
        if method_.stage != "pre-llm" and feature_space is not None:
            raise ValueError(
                f"feature_space: applies to the pre-LLM selectors only, not to method {method!r}; leave it unset"
            )
        n = vision.num_tokens
        if method_.stage == "none":
            if params:
                raise ValueError(f"params: method 'none' takes no parameters, got {sorted(params)}")
            if k is not None and k != n:
                raise ValueError(f"k: method 'none' keeps all {n} tokens; pass k=None (got {k})")
            keep = torch.arange(n, device=vision.features.device).expand(len(vision), n).clone()
            return Selection("none", n, keep)
        if not method_.budget:
            if k is not None:
                raise ValueError(f"k: method {method!r} takes no token budget; pass k=None (got {k!r})")
        elif k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= n:
            raise ValueError(f"k: the number of kept tokens must be an int in 1..{n}, got {k!r}")
        k = int(k) if k is not None else None
        if method_.stage == "in-llm":
            return Selection(method, k, None, self._in_llm_params(method, params))

        if feature_space is None:
            feature_space = method_.feature_space
        if feature_space not in FEATURE_SPACES:
            raise ValueError(f"feature_space: expected 'vision' or 'projected', got {feature_space!r}")
        return_info = bool(params.pop("return_info", False))
        filled = sorted(set(params) & set(method_.inputs) & set(VISION_INPUTS + PROMPT_INPUTS))
        if filled:
            raise ValueError(f"params: {', '.join(filled)} are filled by the wrapper for method {method!r}; do not pass them")
        if method_.per_prompt:  # text-conditioned: chosen per prompt once the questions are known
            unknown = sorted(set(params) - set(method_.parameters))
            if unknown:
                raise ValueError(f"params: {method_.label} takes only {', '.join(method_.parameters)}, got {unknown}")
            return Selection(method, k, None, {**params, "feature_space": feature_space}, per_prompt=True)
        features = vision.features
        if feature_space == "projected":
            features = self.model.model.multi_modal_projector(features)
        extra = self._vision_inputs(method_, vision)
        if method_.output == "tokens":  # a merger: its vectors replace the kept patches
            merged = methods.merge(method, features.float(), vision.cls_attention.float(), k, **params, **extra)
            sources = merged.sources.to(device=vision.features.device, dtype=torch.long)
            return Selection(method, k if k is not None else 0, None, {**params, "feature_space": feature_space},
                             merged.info if return_info else None, tokens=merged.tokens, sources=sources)
        result = methods.select(method, features.float(), vision.cls_attention.float(), k, return_info=return_info,
                                **params, **extra)
        keep, info = result if return_info else (result, None)
        keep = torch.as_tensor(keep, dtype=torch.long, device=vision.features.device)
        self._check_keep(keep, len(vision), n)
        return Selection(method, k, keep, {**params, "feature_space": feature_space}, info)

    def _vision_inputs(self, method_, vision: VisionOutput) -> dict:
        """The vision-tower inputs a method declares (``VISION_INPUTS``), from ``vision``."""
        available = {
            "cls_feature": lambda: None if vision.cls_feature is None else vision.cls_feature.float(),
            "vision_keys": lambda: None if vision.keys is None else vision.keys.float(),
            "vision_features": lambda: vision.features.float(),
            "grid_size": lambda: vision.grid_size,
        }
        return {name: available[name]() for name in method_.inputs if name in available}

    def _in_llm_params(self, method: str, params: dict) -> dict:
        """An in-LLM method's parameters, validated and completed for this model's depth."""
        method_ = method_spec(method)
        allowed = method_.parameters
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"params: {method_.label} takes only {', '.join(allowed)}, got {unknown}")
        extra = {"n_layers": self.num_layers} if "n_layers" in method_.inputs else {}
        return method_.function(**params, **extra)

    def _check_keep(self, keep: torch.Tensor, n_images: int, n: int) -> None:
        if keep.dim() != 2 or keep.shape[0] != n_images:
            raise ValueError(f"keep: expected shape ({n_images}, K), got {tuple(keep.shape)}")
        if keep.shape[1] < 1 or keep.shape[1] > n:
            raise ValueError(f"keep: K must be in 1..{n}, got {keep.shape[1]}")
        if keep.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"keep: expected integer indices, got {keep.dtype}")
        if int(keep.min()) < 0 or int(keep.max()) >= n:
            raise ValueError(f"keep: indices must lie in 0..{n - 1}")
        if keep.shape[1] > 1 and not bool((keep[:, 1:] > keep[:, :-1]).all()):
            raise ValueError("keep: each row must be strictly ascending (distinct tokens in their original order)")

    def _as_selection(self, selection: Selection | torch.Tensor | None, vision: VisionOutput) -> Selection:
        if selection is None:
            return self.select_tokens(vision, "none")
        if isinstance(selection, torch.Tensor):
            keep = selection.to(device=vision.features.device, dtype=torch.long)
            self._check_keep(keep, len(vision), vision.num_tokens)
            return Selection("indices", keep.shape[1], keep)
        if not isinstance(selection, Selection):
            raise ValueError(
                "selection: expected a Selection (from select_tokens), a (B, K) LongTensor or None, "
                f"got {type(selection).__name__}"
            )
        if selection.in_llm:  # an in-LLM method: its parameters, checked for this model
            return replace(selection, params=self._in_llm_params(selection.method, dict(selection.params)))
        if selection.per_prompt:
            return selection
        if selection.tokens is not None:  # a merger's vectors, one set per image
            if selection.tokens.dim() != 3 or selection.tokens.shape[0] != len(vision) \
                    or selection.tokens.shape[2] != vision.features.shape[2]:
                raise ValueError(f"selection: merged tokens of shape {tuple(selection.tokens.shape)} do not fit "
                                 f"{len(vision)} images of width {vision.features.shape[2]}")
            return selection
        keep = selection.keep.to(vision.features.device)
        self._check_keep(keep, len(vision), vision.num_tokens)
        return replace(selection, keep=keep)
