"""Compiled blocks: each transformer block compiled in place (regional compilation).

`nn.Module.compile` keeps parameter names, LoRA names and saved files unchanged; the 40
blocks share one compiled graph. Same precision formats; fused elementwise kernels round a
little differently from eager mode (benchmarks/RESULTS.md measures the loss curves).
"""

from __future__ import annotations

import torch._dynamo
from torch import nn


def compile_blocks(model: nn.Module) -> None:
    """Compile each transformer block in place (regional compilation: one shared graph)."""
    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(cfg.cache_size_limit, 64)
    cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 512)
    for block in model.blocks:
        block.compile()
