"""CDPruner before the language model (ALGORITHMS.md, "CDPruner"; Zhang et al., "Beyond
Attention or Similarity: Maximizing Conditional Diversity for Token Pruning in MLLMs", NeurIPS
2025; released code: https://github.com/Theia-4869/CDPruner, ``llava/model/llava_arch.py``,
``LlavaMetaForCausalLM.encode_images``, and ``llava/model/multimodal_encoder/clip_encoder.py``,
``CLIPVisionTower.load_text_tower`` and ``forward``).

Per prompt (its image's N projected tokens X, its question):

1. ``S = cos(X_i, X_j)``, the cosine similarities of the **projected** tokens (the projector's
   outputs, the language model's input tokens), in float32 (released: ``image_normalized.float()``).
2. Relevance ``r_i = mean_m -cos(E_i, t_m)``, min-max normalised as released:
   ``r = (r - min r + 1e-6) / (max r - min r)`` (so r lies in [1e-6 / range, 1 + 1e-6 / range]).

   - With a CLIP text tower (``text_tower``, a local CLIP checkpoint, LLaVA-1.5's is
     ``openai/clip-vit-large-patch14-336``): ``E = visual_projection(vision_model.post_layernorm(V))``
     of the vision tower's feature-layer patch features V (CLS dropped; layer 22 for LLaVA-1.5),
     and ``t_m = get_text_features`` of the question (the answer-format instruction removed by the
     caller, as the released eval scripts do) tokenised with CLIP's tokenizer (its BOS and EOS, no
     truncation), padded with id 0 and attention mask 0 to a multiple of the text tower's 77
     positions and cut into 77-token segments, each encoded on its own (positions 0..76). The
     **minus sign** is the released code's: the tokens least similar to the question get the
     largest relevance.
   - Without one (``text_tower=None``, the documented fallback; the run is labelled
     "CDPruner (LM-embedding relevance)"): ``r_i = mean_t -cos(X_i, q_t)`` over the language
     model's input embeddings q_t of the question's tokens, the same sign and normalisation.
3. Kernel ``L = diag(r) S diag(r)``; greedy MAP inference of the DPP with the fast Cholesky-style
   update (Chen et al., NeurIPS 2018): ``d2 = diag(L)``; K times: ``j = argmax d2``;
   ``e = (L[j, :] - sum_t c_t[j] c_t) / sqrt(d2[j])``; store ``c = e``; ``d2 -= e ** 2``;
   ``d2[j] = -inf``. ``d2[i]`` is then the Schur complement ``L_ii - L_iY L_YY^-1 L_Yi`` of the
   picked set Y: the factor by which ``det L_Y`` grows if i joins.
4. The K picks, in index order (the registry sorts them), enter the language model: K tokens.

Where this differs from the released function (all only where the released code is undefined or
would depend on rounding):

- **Per prompt**: the released min-max runs over the whole (B, N) relevance tensor of one call,
  whose B images are one prompt's (B = 1 for LLaVA-1.5, the crops of one image for LLaVA-NeXT);
  here the rows are different prompts, so each row is normalised on its own (the same for B = 1).
- **Constant relevance** (max r = min r, e.g. a question without tokens in the fallback): the
  released formula divides by 0 (inf kernel, NaN picks); here r = 1 for every token, i.e. the
  unconditional DPP on S.
- **Near-ties** (rounding-robust, as every selector here: ``_numerics``): ``tol = rounding_delta
  (dtype, d) * max_i L_ii`` (``4 sqrt(d) eps``, d the width of the projected tokens, eps that of
  the work dtype, scaled to the kernel's largest diagonal entry; 3.1e-5 for float32 at d = 4096):
  the pick is the lowest index whose d2 is within ``tol`` of the largest (released:
  ``torch.argmax``, which takes the first exact maximum). An entry of S is rounded by about
  sqrt(d) eps and the update carries that error into d2 at the same scale; exact ties are those
  of duplicate tokens (padding, flat regions), whose relevances and d2 agree in exact arithmetic.
- **Numerical exhaustion**: once the largest remaining d2 is ``<= tol`` (every remaining token
  lies, to rounding, in the span of the picked ones: K above the kernel's numerical rank), the
  released update divides by ``sqrt(d2 <= 0)`` and its picks turn to NaN garbage (argmax of NaN,
  repeated picks, fewer than K tokens in its mask). Here the DPP stops for that prompt and the
  remaining picks are the unpicked tokens of highest relevance r (near-ties within
  ``rounding_delta(dtype, d_r)``, d_r the relevance embeddings' width, to the lower index).
  ``info["dpp_picks"]`` (P,) gives how many picks the DPP made before that (K when it never
  stopped).
- Float64 features give float64 work arithmetic (``_work_dtype``, as every selector here); the
  CLIP towers themselves run in float32.

The released code's optional relevance temperature (``theta``, commented out) is not used by
the released runs and is not implemented.

Cost (``selector_flops``): the similarity GEMM ``2 N^2 d``, the kernel ``2 N^2``, and the greedy
steps: step i (0-based) forms ``sum_t c_t[j] c_t`` over i stored rows (2 i N) plus four N-wide
updates, in all ``N K (K - 1) + 4 N K``; feature normalisation ``3 N d``. The relevance (a text
and a vision projection through CLIP, or ``2 N T d`` in the fallback) depends on the question
and the text tower and is not counted.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from visprune.pruning._numerics import _first_within, _work_dtype, cosine_similarity_matrix, rounding_delta
from visprune.pruning.registry import register

__all__ = ["RELEVANCE_EPS", "cdpruner_relevance", "cdpruner_kernel", "dpp_greedy_map", "cdpruner_flops",
           "load_text_tower", "clip_relevance_embeddings", "cdpruner_select"]

#: The released min-max normalisation's offset: ``(r - min + 1e-6) / (max - min)``.
RELEVANCE_EPS = 1e-6

# One CLIP model and tokenizer per (resolved path, device), loaded on first use.
_TEXT_TOWERS: dict[tuple[str, str], tuple[torch.nn.Module, object]] = {}


def _describe(params: dict) -> str:
    return "CDPruner" if params.get("text_tower") else "CDPruner (LM-embedding relevance)"


def cdpruner_flops(n: int, k: int, d: int) -> float:
    """Selector FLOPs (multiply-adds x 2): ``2 N^2 d + 3 N d + 2 N^2 + N K (K - 1) + 4 N K``
    (see the module docstring; the relevance is not counted)."""
    n, k, d = float(n), float(k), float(d)
    return 2.0 * n * n * d + 3.0 * n * d + 2.0 * n * n + n * k * (k - 1.0) + 4.0 * n * k


# ----------------------------------------------------------------------------------------------
# The CLIP text tower


def _check_text_tower(text_tower) -> Path:
    """The checkpoint directory named by ``text_tower``; ValueError if it cannot be a CLIP one."""
    if not isinstance(text_tower, (str, os.PathLike)) or not str(text_tower):
        raise ValueError(f"text_tower: expected the path of a local CLIP checkpoint directory or None, got {text_tower!r}")
    path = Path(text_tower).expanduser()
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"text_tower: no CLIP checkpoint at {str(path)!r} (expected a directory with config.json, "
                         "e.g. a local copy of openai/clip-vit-large-patch14-336); pass text_tower=None for the "
                         "LM-embedding fallback")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as err:
        raise ValueError(f"text_tower: cannot read {str(config)!r} ({err})") from None
    if model_type != "clip":
        raise ValueError(f"text_tower: {str(path)!r} holds a {model_type!r} model, not a CLIP model with a text tower "
                         "(model_type 'clip')")
    return path.resolve()


def load_text_tower(text_tower, device: torch.device | str = "cpu"):
    """``(CLIPModel, tokenizer)`` from the local checkpoint ``text_tower`` on ``device``, float32,
    eval mode, loaded once per path and device and cached in this module (never downloaded:
    ``local_files_only=True``). Raises ValueError naming ``text_tower`` if it is not a CLIP
    checkpoint with a tokenizer."""
    path = _check_text_tower(text_tower)
    key = (str(path), str(torch.device(device)))
    if key not in _TEXT_TOWERS:
        from transformers import AutoTokenizer, CLIPModel

        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as err:  # an unreadable checkpoint: one clear line, naming the argument
            raise ValueError(f"text_tower: cannot load a CLIP model and tokenizer from {str(path)!r} "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        model.requires_grad_(False)
        _TEXT_TOWERS[key] = (model.to(device).eval(), tokenizer)
    return _TEXT_TOWERS[key]


def _pooled(out) -> torch.Tensor:
    """``get_text_features`` returns a tensor (transformers 4) or an output whose pooler_output
    is the projected embedding (transformers 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_relevance_embeddings(model, tokenizer, questions: list[str], vision_features: torch.Tensor):
    """CLIP's ``E`` (P, N, c) and the text embeddings ``t`` of each question (a list of P
    (M_p, c) tensors, one row per 77-token segment), float32, as the released ``forward``.

    E = ``visual_projection(vision_model.post_layernorm(V))``; each question is tokenised whole
    (BOS ... EOS, no truncation), padded with id 0 / mask 0 to ``M_p * 77`` tokens
    (``M_p = (T - 1) // 77 + 1``) and reshaped into M_p segments; all prompts' segments go
    through ``get_text_features`` in one batch.
    """
    device = next(model.parameters()).device
    width = model.config.text_config.max_position_embeddings  # 77
    ids, masks, counts = [], [], []
    for question in questions:
        enc = tokenizer(text=question, return_tensors="pt", verbose=False)
        n_tok = enc["input_ids"].shape[1]
        segments = (n_tok - 1) // width + 1
        pad = segments * width - n_tok
        for name, rows in (("input_ids", ids), ("attention_mask", masks)):
            v = enc[name]
            rows.append(torch.cat([v, v.new_zeros((1, pad))], dim=1).reshape(segments, width))
        counts.append(segments)
    text = _pooled(model.get_text_features(input_ids=torch.cat(ids).to(device),
                                           attention_mask=torch.cat(masks).to(device)))  # (sum M_p, c)
    image = model.visual_projection(model.vision_model.post_layernorm(vision_features.to(device, torch.float32)))
    return image, list(torch.split(text.float(), counts))


# ----------------------------------------------------------------------------------------------
# Relevance, kernel, greedy MAP


def _normalise_relevance(raw: torch.Tensor) -> torch.Tensor:
    """Per row: ``(r - min + 1e-6) / (max - min)``; a constant row becomes all ones."""
    low = raw.amin(dim=1, keepdim=True)
    span = raw.amax(dim=1, keepdim=True) - low  # (P, 1)
    flat = span <= 0
    r = (raw - low + RELEVANCE_EPS) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.ones_like(r), r)


def _negated_mean_cosine(image: torch.Tensor, texts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``-mean_m cos(image_i, texts_m)`` per prompt: image (P, N, c), texts P tensors (M_p, c)."""
    image = F.normalize(image.to(dtype), dim=-1)
    rows = []
    for p, t in enumerate(texts):
        t = F.normalize(t.to(device=image.device, dtype=dtype), dim=-1)  # (M_p, c)
        if t.shape[0] == 0:  # no text at all: constant relevance (r = 1 after normalisation)
            rows.append(torch.zeros(image.shape[1], dtype=dtype, device=image.device))
        else:
            rows.append(-(image[p] @ t.T).mean(dim=-1))  # (N,)
    return torch.stack(rows)


def _check_prompt_inputs(batch: int, n: int, d: int, text_tower, questions, question_embeddings, vision_features):
    """Validate the per-prompt and vision inputs (cheap checks, before any expensive work)."""
    def check_list(name, value):
        if value is None:
            raise ValueError(f"{name}: CDPruner is text-conditioned and needs one entry per prompt "
                             f"(P = {batch}), got None")
        if not isinstance(value, (list, tuple)) or len(value) != batch:
            got = f"{len(value)} entries" if isinstance(value, (list, tuple)) else type(value).__name__
            raise ValueError(f"{name}: expected a list of P = {batch} entries (one per prompt), got {got}")

    check_list("questions", questions)
    bad = [i for i, q in enumerate(questions) if not isinstance(q, str)]
    if bad:
        raise ValueError(f"questions: expected strings, entry {bad[0]} is {type(questions[bad[0]]).__name__}")
    if text_tower is None or question_embeddings is not None:
        check_list("question_embeddings", question_embeddings)
        for i, q in enumerate(question_embeddings):
            if not isinstance(q, torch.Tensor) or q.dim() != 2 or q.shape[1] != d or not q.is_floating_point():
                shape = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
                raise ValueError(f"question_embeddings: entry {i} must be a float tensor (T, {d}) (the language "
                                 f"model's input embeddings of the question's tokens), got {shape}")
            if q.numel() and not bool(torch.isfinite(q).all()):
                raise ValueError(f"question_embeddings: entry {i} contains NaN or infinite values")
    if text_tower is not None:
        if not isinstance(vision_features, torch.Tensor) or vision_features.dim() != 3 \
                or tuple(vision_features.shape[:2]) != (batch, n):
            shape = tuple(vision_features.shape) if isinstance(vision_features, torch.Tensor) else vision_features
            raise ValueError(f"vision_features: with a CLIP text tower CDPruner needs the vision tower's feature-layer "
                             f"patch features (P, N, d_v) = ({batch}, {n}, d_v), got {shape}")


def _relevance(features, tower, questions, question_embeddings, vision_features) -> torch.Tensor:
    """The normalised relevance (P, N), inputs already validated; ``tower`` = (model, tokenizer) or None."""
    dtype = _work_dtype(features)
    if tower is None:
        raw = _negated_mean_cosine(features, list(question_embeddings), dtype)
    else:
        model, tokenizer = tower
        if vision_features.shape[-1] != model.config.vision_config.hidden_size:
            raise ValueError(f"vision_features: width {vision_features.shape[-1]} does not match the CLIP vision "
                             f"tower of text_tower ({model.config.vision_config.hidden_size})")
        image, texts = clip_relevance_embeddings(model, tokenizer, list(questions), vision_features)
        raw = _negated_mean_cosine(image.to(features.device), texts, dtype)
    return _normalise_relevance(raw)


def cdpruner_relevance(features, *, text_tower=None, questions=None, question_embeddings=None, vision_features=None):
    """The normalised relevance r (P, N) (ALGORITHMS.md, "CDPruner", step 2; see the module
    docstring), in the work dtype of ``features`` (P, N, d); the inputs as ``cdpruner_select``'s."""
    tower = _check_inputs_and_tower(features, text_tower, questions, question_embeddings, vision_features)
    return _relevance(features, tower, questions, question_embeddings, vision_features)


def _check_inputs_and_tower(features, text_tower, questions, question_embeddings, vision_features):
    """All cheap checks (the text tower's path first), then the text tower, loaded or from the cache."""
    if text_tower is not None:
        _check_text_tower(text_tower)
    batch, n, d = features.shape
    _check_prompt_inputs(batch, n, d, text_tower, questions, question_embeddings, vision_features)
    return None if text_tower is None else load_text_tower(text_tower, features.device)


def cdpruner_kernel(features: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """``L = diag(r) S diag(r)`` (P, N, N), S the cosine similarities of ``features``."""
    sim = cosine_similarity_matrix(features)  # (P, N, N), symmetric, float32 or float64
    r = relevance.to(sim.dtype)
    return r.unsqueeze(2) * sim * r.unsqueeze(1)


def dpp_greedy_map(kernel: torch.Tensor, k: int, tol: torch.Tensor | float, fallback: torch.Tensor,
                   fallback_tol: float = 0.0):
    """Greedy MAP inference of the DPP with kernel ``kernel`` (P, N, N), the fast Cholesky-style
    update; returns the picks (P, K) in pick order and the DPP picks per row (P,).

    Each step picks the lowest index whose d2 is within ``tol`` (scalar or (P, 1)) of the largest.
    A row whose largest remaining d2 is ``<= tol`` stops (numerical exhaustion): its remaining picks
    are the unpicked tokens of largest ``fallback`` (P, N) (near-ties within ``fallback_tol`` to
    the lower index).
    """
    batch, n, _ = kernel.shape
    rows = torch.arange(batch, device=kernel.device)
    d2 = torch.diagonal(kernel, dim1=1, dim2=2).clone()  # (P, N)
    cis = kernel.new_zeros(batch, k, n)  # (P, K, N): row i is c_i
    picks = torch.empty(batch, k, dtype=torch.long, device=kernel.device)
    picked = torch.zeros(batch, n, dtype=torch.bool, device=kernel.device)
    active = torch.ones(batch, dtype=torch.bool, device=kernel.device)
    dpp_picks = torch.full((batch,), k, dtype=torch.long, device=kernel.device)
    tol = torch.as_tensor(tol, dtype=kernel.dtype, device=kernel.device).reshape(-1, 1).expand(batch, 1)
    for i in range(k):
        best = d2.amax(dim=1, keepdim=True)  # picked tokens hold -inf
        stop = active & (best[:, 0] <= tol[:, 0])
        if bool(stop.any()):
            dpp_picks[stop] = i
            active &= ~stop
        j = _first_within(d2, tol)  # (P,)
        if not bool(active.all()):
            by_relevance = _first_within(fallback.masked_fill(picked, -math.inf), fallback_tol)
            j = torch.where(active, j, by_relevance)
        picks[:, i] = j
        picked[rows, j] = True
        # e = (L[j, :] - sum_t c_t[j] c_t) / sqrt(d2[j]); rows that stopped store 0
        proj = torch.bmm(cis[rows, :i, j].unsqueeze(1), cis[:, :i]).squeeze(1) if i else 0.0  # (P, N)
        pivot = d2[rows, j].clamp(min=torch.finfo(kernel.dtype).tiny).sqrt().unsqueeze(1)  # (P, 1)
        e = (kernel[rows, j] - proj) / pivot
        e = torch.where(active.unsqueeze(1), e, torch.zeros_like(e))
        cis[:, i] = e
        d2 -= e * e
        d2[rows, j] = -math.inf
    return picks, dpp_picks


def _check_run(params: dict, k, n_tokens, n_layers) -> dict:
    """Before a run: a ``text_tower`` must name a CLIP checkpoint folder (its ``config.json`` read,
    the weights left for the run to load on its device); the engine's tiny dummy input then runs
    the fallback relevance, since its widths cannot match the tower's."""
    if params.get("text_tower") is not None:
        _check_text_tower(params["text_tower"])
    return {**params, "text_tower": None}


@register("cdpruner", label="CDPruner", color="#f7b6d2", feature_space="projected",
          inputs=("questions", "question_embeddings", "vision_features"),
          source="https://github.com/Theia-4869/CDPruner", convention="K tokens enter the language model",
          selector_flops=cdpruner_flops, describe=_describe, check=_check_run)
def cdpruner_select(features, saliency, k, *, text_tower: str | None = None, questions=None,
                    question_embeddings=None, vision_features=None):
    """CDPruner: the K projected tokens of the greedy MAP of the question-conditioned DPP
    (ALGORITHMS.md, "CDPruner"; module docstring for the details and the released code).

    - ``features`` (P, N, d): the projector's outputs of each prompt's image; ``saliency`` unused.
    - ``text_tower``: None (relevance from ``question_embeddings``, the language model's input
      embeddings of each question) or the path of a local CLIP checkpoint (relevance from CLIP's
      text embeddings of ``questions`` against CLIP's projection of ``vision_features``).
    - ``questions``: P strings, the question without its answer-format instruction;
      ``question_embeddings``: P tensors (T_p, d); ``vision_features`` (P, N, d_v): the vision
      tower's feature-layer patch features. Filled by the model wrapper.

    Returns ``(indices (P, K), {"dpp_picks": (P,)})``; ValueError naming a missing or malformed
    input, or a ``text_tower`` that is not a local CLIP checkpoint, before any expensive work.
    """
    tower = _check_inputs_and_tower(features, text_tower, questions, question_embeddings, vision_features)
    relevance = _relevance(features, tower, questions, question_embeddings, vision_features)  # (P, N)
    kernel = cdpruner_kernel(features, relevance)  # (P, N, N)
    dtype = kernel.dtype
    scale = torch.diagonal(kernel, dim1=1, dim2=2).amax(dim=1, keepdim=True)  # (P, 1): max_i L_ii
    tol = rounding_delta(dtype, features.shape[-1]) * scale
    rel_width = features.shape[-1] if tower is None else tower[0].config.projection_dim
    picks, dpp_picks = dpp_greedy_map(kernel, k, tol, relevance.to(dtype), rounding_delta(dtype, rel_width))
    return picks, {"dpp_picks": dpp_picks}
