"""One chunk of samples through the model: per-image vision, selection and statistics, then the
prompts in padded batches (DESIGN.md section 4). A method's per-image inputs and diagnostics
come from its spec (``MethodSpec.inputs``, ``MethodSpec.records``)."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from visprune.engine.config import RunConfig
from visprune.metrics.cost import prefill_flops
from visprune.pruning import spec as method_spec

#: The per-sample record's own columns, in table order (metadata columns follow, sorted).
RECORD_COLUMNS = (
    "sample_id", "image_id", "order", "status", "error", "label", "answers", "probs", "confidence",
    "prediction", "pred_answer", "correct", "answer_mass", "answer_token_ids", "answer_logits", "caption", "tokens_kept",
    "erank_kept", "erank_image", "attn_entropy", "lm_tokens", "visual_tokens", "visual_per_layer", "prefill_flops",
    "selector_flops",
)  # then each method's declared per-image diagnostics (MethodSpec.records, e.g. adaptive's tau)


def compute_records(llava, config: RunConfig, samples: list, positions: list[int], batch_size: int) -> list[dict]:
    """Records for the samples of one chunk (whole images), in the chunk's order."""
    import torch

    from visprune.datasets import ImageLoadError
    from visprune.instrument.image_stats import attention_entropy_batch, erank_batch

    image_ids = list(dict.fromkeys(s.image_id for s in samples))
    first = {s.image_id: s for s in reversed(samples)}
    images, failed = {}, {}
    for image_id in image_ids:
        try:
            images[image_id] = first[image_id].load_image()
        except ImageLoadError as err:
            failed[image_id] = str(err)
    ok_ids = [i for i in image_ids if i in images]

    # vision tower + selection + image statistics, once per image, in batches of images
    per_image: dict[str, dict] = {}
    visions, selections, kept_erank = [], [], []
    method = method_spec(config.method)
    for start in range(0, len(ok_ids), batch_size):
        batch_ids = ok_ids[start : start + batch_size]
        vision = llava.encode_images([images[i] for i in batch_ids], preprocess=config.preprocess)
        features = vision.features.float()
        erank_image = erank_batch(features)  # (B,), the image's diversity, reused by "adaptive"
        entropy = attention_entropy_batch(vision.cls_attention.float()).cpu()
        if method.stage == "none":
            selection = llava.select_tokens(vision, "none")
        else:
            params = {**config.params, **_per_image_inputs(method, batch_ids, erank_image)}
            if method.records:
                params["return_info"] = True
            selection = llava.select_tokens(vision, config.method, config.k, **params)
        diagnostics = {name: _per_row((selection.info or {}).get(name), len(batch_ids)) for name in method.records}
        if selection.method == "none":
            kept_erank.append(erank_image.cpu())  # all tokens kept: the image's own erank
        elif selection.keep is not None:
            kept_erank.append(erank_batch(vision.kept_features(selection.keep).float()).cpu())
        elif selection.tokens is not None:  # a merger: the erank of the vectors it gives the projector
            merged = selection.tokens.float()
            kept_erank.append(erank_batch(merged).cpu() if merged.shape[1] > 0
                              else torch.full((len(batch_ids),), float("nan")))
        else:
            kept_erank.append(None)
        erank_image = erank_image.cpu()
        for row, image_id in enumerate(batch_ids):
            per_image[image_id] = {
                "batch": len(visions), "row": row,
                "erank_image": float(erank_image[row]), "attn_entropy": float(entropy[row]),
                **{name: values[row] for name, values in diagnostics.items()},
            }
        visions.append(vision)
        selections.append(selection)

    selector_cost = _selector_flops(method, config.k, config.params.get("feature_space"), llava)

    # prompts, in batches, each pointing at its image's row
    records = []
    for sample, position in zip(samples, positions):
        base = {
            "sample_id": sample.sample_id, "image_id": sample.image_id, "order": position,
            "label": sample.label, "answers": list(sample.answers), **_flat_meta(sample.meta),
        }
        if sample.image_id in failed:
            records.append({**base, "status": "failed", "error": failed[sample.image_id]})
        else:
            records.append({**base, "status": "ok", "error": None, **per_image[sample.image_id]})

    by_batch: dict[int, list[int]] = {}
    for i, rec in enumerate(records):
        if rec["status"] == "ok":
            by_batch.setdefault(rec["batch"], []).append(i)
    for b, record_rows in by_batch.items():
        vision, selection = visions[b], selections[b]
        for start in range(0, len(record_rows), batch_size):
            rows = record_rows[start : start + batch_size]
            batch_samples = [samples[i] for i in rows]
            image_index = [records[i]["row"] for i in rows]
            questions = [s.prompt for s in batch_samples]
            if config.dataset == "chair":
                out = llava.generate(questions, vision, selection, image_index=image_index,
                                     max_new_tokens=config.max_new_tokens)
                keep = out.keep
                for j, i in enumerate(rows):
                    records[i]["caption"] = out.texts[j]
            else:
                out = llava.score(questions, [s.answers for s in batch_samples], vision, selection,
                                  image_index=image_index)
                keep = out.keep
                for j, i in enumerate(rows):
                    probs = out.probs[j, : int(out.lengths[j])].double().numpy()
                    pred = int(np.argmax(probs))
                    records[i].update({
                        "probs": probs.tolist(), "confidence": float(probs[pred]), "prediction": pred,
                        "pred_answer": batch_samples[j].answers[pred],
                        "correct": bool(pred == batch_samples[j].label),
                        "answer_mass": float(out.answer_mass[j]),
                        "answer_token_ids": [list(map(int, ids)) for ids in out.answer_ids[j]],
                        "answer_logits": out.answer_logits[j],
                    })
            if selection.keep is not None or selection.tokens is not None:  # chosen per image: one erank per image, shared
                erank_kept = kept_erank[b][torch.as_tensor(image_index)]
            elif bool((keep >= 0).all()):  # an in-LLM method chooses per prompt
                erank_kept = erank_batch(vision.kept_features(keep.to(vision.features.device), image_index).float()).cpu()
            else:  # SparseVLM's recycled tokens (-1) are no patch: the erank of the kept patches, row by row
                erank_kept = torch.cat([
                    erank_batch(vision.kept_features(row[row >= 0][None].to(vision.features.device), [image]).float())
                    for row, image in zip(keep, image_index)
                ]).cpu()
            flops = prefill_flops(out.tokens_per_layer.numpy(), **llava.lm_widths)  # (P,)
            for j, i in enumerate(rows):
                records[i]["tokens_kept"] = int(keep.shape[1])
                records[i]["erank_kept"] = float(erank_kept[j])
                records[i]["lm_tokens"] = int(out.tokens_per_layer[j, 0])
                records[i]["visual_tokens"] = int(out.visual_per_layer[j, 0])
                records[i]["visual_per_layer"] = float(out.visual_per_layer[j].double().mean())
                records[i]["prefill_flops"] = float(flops[j])
                records[i]["selector_flops"] = selector_cost
    for rec in records:
        rec.pop("batch", None)
        rec.pop("row", None)
    return records

def _selector_flops(method, k, feature_space, llava) -> float | None:
    """The method's own analytic cost per image (``MethodSpec.selector_flops(n, k, d)``, with N
    visual tokens and d the width of the features it ranks), or None when it declares none."""
    if method.selector_flops is None:
        return None
    n = llava.num_visual_tokens
    if method.stage == "in-llm" or (feature_space or method.feature_space) == "projected":
        d = llava.lm_widths["hidden"]  # in the language model, or the projector's output
    else:
        d = int(llava.config.vision_config.hidden_size)
    return float(method.selector_flops(n, k if k is not None else 0, d))


def _per_image_inputs(method, image_ids: Sequence[str], image_erank) -> dict:
    """The per-image inputs a method declares (``MethodSpec.inputs``), for one batch of images:
    ``sample_seeds`` (a seed per image from its id, so a draw does not depend on its batch or
    chunk) and ``image_erank`` (the erank of the image's vision features, computed anyway)."""
    available = {"sample_seeds": lambda: [_stable_seed(i) for i in image_ids], "image_erank": lambda: image_erank}
    return {name: available[name]() for name in method.inputs if name in available}


def _per_row(values, n: int) -> list:
    """A per-image diagnostic (tensor, array or list of n values) as n plain Python numbers."""
    if values is None:
        return [None] * n
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]


def _stable_seed(image_id: str) -> int:
    """A seed derived from an image id, the same in every process and Python session."""
    return int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:4], "little")


def _flat_meta(meta: dict) -> dict:
    """Sample metadata as record columns (JSON scalars and lists only; reserved names prefixed)."""
    reserved = set(RECORD_COLUMNS) | {"dataset", "method", "k", "run"}
    out = {}
    for name, value in meta.items():
        out[f"meta_{name}" if name in reserved else name] = value
    return out


