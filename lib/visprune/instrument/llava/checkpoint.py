"""Loading a llava-hf checkpoint: what its directory must hold, devices and dtypes (DESIGN.md section 3)."""

from __future__ import annotations

import json

import torch
from torch import nn

from pathlib import Path

# What a llava-hf checkpoint directory must hold; each entry: (what it is, accepted file names).
CHECKPOINT_FILES = (
    ("model config", ("config.json",)),
    ("weights", ("model.safetensors", "model.safetensors.index.json")),
    ("tokenizer", ("tokenizer.json", "tokenizer.model")),
    ("tokenizer config", ("tokenizer_config.json",)),
    ("image processor config", ("preprocessor_config.json", "processor_config.json")),
)


# --------------------------------------------------------------------------------------------
# Devices and dtypes
# --------------------------------------------------------------------------------------------


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on a CUDA device that supports it, else float16 on CUDA; float32 on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _cast_model(model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move ``model`` in place, keeping rotary ``inv_freq`` buffers in float32 (as from_pretrained does)."""
    fp32_buffers = {
        name: buf.detach().clone()
        for name, buf in model.named_buffers()
        if "inv_freq" in name and buf.dtype == torch.float32
    }
    model.to(device=device, dtype=dtype)
    for name, buf in fp32_buffers.items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        setattr(owner, attr, buf.to(device))


def check_checkpoint_dir(path: str | Path) -> Path:
    """Check that ``path`` is a llava-hf layout directory; return it as an absolute Path.

    Raises FileNotFoundError naming the path and every expected file that is missing.
    """
    root = Path(path).expanduser().resolve()
    expected = "; ".join(f"{what}: {' or '.join(names)}" for what, names in CHECKPOINT_FILES)
    if not root.is_dir():
        raise FileNotFoundError(
            f"LLaVA checkpoint directory not found: {root}. Expected a llava-hf layout directory "
            f"(as saved by save_pretrained) holding {expected}."
        )
    missing = [
        f"{what} ({' or '.join(names)})"
        for what, names in CHECKPOINT_FILES
        if not any((root / name).is_file() for name in names)
    ]
    index = root / "model.safetensors.index.json"
    if not (root / "model.safetensors").is_file() and index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing += [
            f"weight shard {s} (listed in model.safetensors.index.json)" for s in shards if not (root / s).is_file()
        ]
    if missing:
        raise FileNotFoundError(
            f"LLaVA checkpoint {root} is missing: {', '.join(missing)}. A llava-hf layout directory holds {expected}."
        )
    return root

