"""What the engine reads from a checkpoint without loading it: content fingerprint, shape,
prompt format, and the device and dtype a run uses (DESIGN.md section 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visprune.engine import cache as runcache


def model_fingerprint(model_dir: Path, digests: runcache.DigestCache | None = None) -> dict:
    """The checkpoint's identity by content (:func:`visprune.engine.cache.model_fingerprint`)."""
    return runcache.model_fingerprint(model_dir, digests)


def model_shape(model_dir: Path) -> tuple[int, int]:
    """(N visual tokens per image, language-model layers), read from ``config.json`` only."""
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text())
        vision = cfg.get("vision_config", {})
        text = cfg.get("text_config", {})
        side = int(vision.get("image_size", 336)) // int(vision.get("patch_size", 14))
        return side * side, int(text.get("num_hidden_layers", 32))
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"model config {path} is not a valid llava-hf config.json ({err}); restore it") from None


def prompt_format(model_dir: Path) -> dict:
    """The prompt format the checkpoint declares, as a plain dict (part of every run key)."""
    from visprune.instrument import prompts

    return prompts.read_prompt_format(model_dir).describe()


def resolve_device_dtype(device: Any, dtype: Any) -> tuple[str, str]:
    """(device, dtype) names as the model wrapper will use them, checked before any model loads.

    ``device``: None (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
    ``dtype``: None (bfloat16 on CUDA where supported, float16 on other CUDA devices, float32 on
    CPU), a torch dtype or its name. Raises ValueError naming the parameter.
    """
    import torch

    from visprune.instrument.llava import default_device, default_dtype

    if device is None:
        dev = default_device()
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device: {device!r} is not a device; use cpu, cuda or cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device: {device!r} is not supported; use cpu, cuda or cuda:N")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device: {device!r} was asked for but no CUDA device is available here; use --device cpu")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ValueError(f"device: {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dtype is None:
        dt = default_dtype(dev)
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        dt = getattr(torch, str(dtype).replace("torch.", ""), None)
        if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
            raise ValueError(f"dtype: {dtype!r} is not a floating-point torch dtype; use float32, float16 or bfloat16")
    return str(dev), str(dt).replace("torch.", "")

