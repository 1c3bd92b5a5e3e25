"""The recompute policy: gradient checkpointing of every block, of none, or of a chosen few.

Every block (the reference), none, or as few as the memory budget needs ("auto": the
count comes from the speed plan, memory_plan.py, spread evenly over the depth).
Recomputation does not change any value.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...device_memory import available_bytes
from .memory_plan import AUTO_RESERVE_BYTES, DitShape, SpeedPlan, kept_block_bytes


def activation_bytes_per_block(model: nn.Module, tokens: int, compiled: bool = False) -> int:
    """Estimated activation memory one un-checkpointed block keeps for backward."""
    block = model.blocks[0]
    dim = getattr(block.attn1.to_q, "in_features", 0)
    ffn = getattr(block.ffn.net[2], "in_features", 0)
    shape = DitShape(dim, ffn, len(model.blocks), 0, 0, 0)
    return kept_block_bytes(shape, tokens, compiled)


def spread(n_ckpt: int, n: int) -> list[int]:
    """n_ckpt block indices out of n, spread evenly over the depth."""
    if n_ckpt <= 0:
        return []
    if n_ckpt >= n:
        return list(range(n))
    return sorted({math.floor(i * n / n_ckpt) for i in range(n_ckpt)})


def blocks_to_checkpoint(model: nn.Module, plan: SpeedPlan, device: torch.device) -> list[int]:
    """Indices of the blocks to recompute in backward, by plan.checkpointing."""
    n = len(model.blocks)
    if plan.checkpointing == "none":
        return []
    if plan.checkpointing == "full":
        return list(range(n))
    if plan.recompute is not None:  # planned from the memory budget (plan_speed)
        return spread(plan.recompute, n)
    if plan.tokens is None or device.type != "cuda":
        return list(range(n))
    free = available_bytes(device)
    per_block = max(activation_bytes_per_block(model, plan.tokens, plan.compile), 1)
    keep = int(max(0, free - AUTO_RESERVE_BYTES) // per_block)  # blocks that need no recompute
    return spread(max(0, n - keep), n)


def set_checkpointing(model: nn.Module, indices: list[int]) -> None:
    """Gradient checkpointing of exactly the blocks `indices` (none: checkpointing off)."""
    if not indices:
        if getattr(model, "is_gradient_checkpointing", False):
            model.disable_gradient_checkpointing()
        return
    chosen = {id(model.blocks[i]) for i in indices}

    def checkpoint_some(block, *args):
        if id(block) in chosen:
            return checkpoint(block.__call__, *args, use_reentrant=False)
        return block(*args)

    model.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_some)
