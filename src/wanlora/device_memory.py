"""Device memory as the memory plans see it, and handing it back between models.

PyTorch's caching allocator keeps freed blocks reserved for this process: the driver
(`mem_get_info`) reports them as used, so a plan made after one model was freed would see
too little memory unless the blocks go back first (or are counted as ours to reuse).
"""

from __future__ import annotations

import gc

import torch


def free_device_memory(device: torch.device) -> None:
    """Give back what this process no longer uses: objects in reference cycles first (a
    model with hooks sits in one until the collector runs), then the allocator's free blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def available_bytes(device: torch.device) -> int:
    """Memory this process can still allocate on a CUDA device: the driver's free memory plus
    the blocks our caching allocator holds without using them."""
    free, _total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def out_of_memory_detail(exc: BaseException) -> str:
    """The informative part of torch's out-of-memory message (what it tried to allocate, what
    is free, which processes hold the card), without its allocator tuning advice."""
    text = " ".join(str(exc).split()) or "CUDA out of memory"
    for cut in (" Including non-PyTorch memory", " If reserved but unallocated"):
        text = text.split(cut)[0]
    return text.rstrip(". ")
