"""Precision as the reference does it.

- The DiT file's dtype decides the compute dtype: an fp16 file must train with fp16 mixed
  precision, a bf16 file with bf16; an fp8 file follows `mixed_precision`.
- fp8_base: every floating-point weight is rounded to float8_e4m3fn (no scaling). fp8 values
  are exact in fp16/bf16, so the rounded weights can be held in the compute dtype (bit-
  identical numerics, no per-step casting); compute runs under autocast in that dtype.
- The time embedding (MLP and projection to the six modulation vectors) runs in float32;
  `wanlora.models.load_dit` builds the model that way.
- fp16 uses a gradient scaler (accelerate's defaults); LoRA weights are float32.
"""

from __future__ import annotations

import torch

from ..errors import WanloraError

MIXED_PRECISION_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}


def compute_dtype(mixed_precision: str, file_dtype: torch.dtype, dit_path) -> torch.dtype:
    """The compute dtype, refusing combinations the reference refuses."""
    wanted = MIXED_PRECISION_DTYPES[mixed_precision]
    if file_dtype in (torch.float16, torch.bfloat16) and wanted not in (file_dtype, torch.float32):
        name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[file_dtype]
        raise WanloraError(
            f"{dit_path}: this DiT file is {name} but training.mixed_precision is '{mixed_precision}'",
            f'set training.mixed_precision = "{name}" in wanlora.toml (the file\'s dtype decides)',
        )
    return wanted


def autocast(device: torch.device, dtype: torch.dtype, cache_enabled: bool = True):
    """Autocast in the compute dtype (a no-op context for float32).

    cache_enabled=False while a CUDA graph is captured (autocast's cast cache must not live
    across captures)."""
    return torch.autocast(
        device_type=device.type,
        dtype=dtype,
        enabled=dtype != torch.float32,
        cache_enabled=cache_enabled,
    )


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (init 2**16, growth x2 every 2000 good steps, backoff x0.5)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
