"""Where a cache-time model runs: on the GPU when it fits, else on the CPU.

The cache encodes with models that training never uses again: the umT5-xxl text encoder
(11.4 GB in bf16) and the VAE. On an 8-16 GB card (or a bigger one that other processes
share) the text encoder does not fit, and a few dozen captions on the CPU take minutes,
not an out-of-memory error. The rule, one pure function (`choose_device`) so every branch is
tested with numbers:

    room = min(free bytes on the card, training.max_vram_gb)   # a user cap counts as the card
    GPU   when the model's bytes (read off its file, no weights loaded) + ENCODE_MARGIN <= room
    CPU   otherwise, said in one line (`fallback_line`)

Free bytes are what this process can still allocate (device_memory.available_bytes: the
driver's free memory plus our allocator's unused blocks). Activations are not counted: one
caption (512 tokens) or one image through the VAE needs far less than the margin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..device_memory import available_bytes
from ..models.files import loaded_bytes

log = logging.getLogger(__name__)

GiB = 1024**3
ENCODE_MARGIN_BYTES = GiB  # one caption's / one image's activations, allocator slack


@dataclass(frozen=True)
class Placement:
    """The device a model runs on, and the numbers the choice was made from."""

    device: torch.device
    wanted: torch.device  # the device asked for (the cache's device)
    need_bytes: int  # the model's weights
    room_bytes: int | None  # free memory, or the cap when smaller; None: not a GPU
    capped: bool  # room_bytes is training.max_vram_gb

    @property
    def fell_back(self) -> bool:
        return self.device != self.wanted


def choose_device(
    wanted: torch.device,
    need_bytes: int,
    *,
    free_bytes: int | None,
    cap_bytes: int | None,
    margin_bytes: int = ENCODE_MARGIN_BYTES,
) -> Placement:
    """`wanted` when the model fits its memory (or `wanted` is not a GPU), else the CPU."""
    if wanted.type != "cuda":
        return Placement(wanted, wanted, need_bytes, None, False)
    capped = cap_bytes is not None and (free_bytes is None or cap_bytes < free_bytes)
    room = cap_bytes if capped else free_bytes
    if room is None or need_bytes + margin_bytes <= room:
        return Placement(wanted, wanted, need_bytes, room, capped)
    return Placement(torch.device("cpu"), wanted, need_bytes, room, capped)


def cap_bytes_of(max_vram_gb: float | None) -> int | None:
    return None if max_vram_gb is None else int(max_vram_gb * GiB)


def place_model(
    path: Path, dtype: torch.dtype, wanted: torch.device, max_vram_gb: float | None
) -> Placement:
    """`choose_device` for the model file at `path` loaded in `dtype`, with the card's free
    memory now and the project's training.max_vram_gb."""
    need, cap = loaded_bytes(path, dtype), cap_bytes_of(max_vram_gb)
    over_cap = cap is not None and need + ENCODE_MARGIN_BYTES > cap  # no need to ask the card
    free = available_bytes(wanted) if wanted.type == "cuda" and not over_cap else None
    return choose_device(wanted, need, free_bytes=free, cap_bytes=cap)


def fallback_line(what: str, placement: Placement, task: str) -> str:
    """`text encoder: 11.4 GB does not fit in 7.5 GiB free on cuda:0 -> encoding 18
    captions on the CPU (slower)`."""
    room = placement.room_bytes or 0
    where = "(training.max_vram_gb)" if placement.capped else "free"
    return (
        f"{what}: {placement.need_bytes / 1e9:.1f} GB does not fit in {room / GiB:.1f} GiB "
        f"{where} on {_name(placement.wanted)} -> {task} on the CPU (slower)"
    )


def report_fallback(what: str, placement: Placement, task: str) -> None:
    if placement.fell_back:
        log.info(fallback_line(what, placement, task))


def _name(device: torch.device) -> str:
    return f"{device.type}:{device.index or 0}"  # `cuda` alone is the first card
