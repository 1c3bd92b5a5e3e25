"""Cache entries on disk: one safetensors file per entry, verified when read.

Each file carries its own cache key (the file name) and the sha256 of its tensor's bytes in
its metadata; an entry whose file is truncated, corrupt, does not match, or is another
entry's file copied over it is treated as missing and recomputed, never trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..fsutil import atomic_path


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(
        tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    ).hexdigest()


def write_entry(path: Path, name: str, tensor: torch.Tensor, info: dict[str, str]) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    metadata = {**info, "key": path.stem, "sha256": tensor_sha256(tensor)}
    with atomic_path(path) as tmp:
        save_file({name: tensor}, str(tmp), metadata=metadata)


def read_entry(path: Path, name: str) -> torch.Tensor | None:
    """The entry's tensor, or None when it is missing or fails verification."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            tensor = f.get_tensor(name)
            metadata = f.metadata() or {}
    except Exception:  # truncated / not safetensors / wrong key: recompute
        return None
    if metadata.get("key") != path.stem or metadata.get("sha256") != tensor_sha256(tensor):
        return None
    return tensor
