"""LoRA inputs without peft's float32 copies (a memory saving, values unchanged)."""

from __future__ import annotations

from peft.tuners.lora import LoraLayer
from torch import nn


def skip_lora_input_cast(model: nn.Module) -> None:
    """Stop peft casting each LoRA input to float32 (the LoRA weights' dtype).

    Under autocast the LoRA matmuls run in the compute dtype anyway, so peft's cast only adds
    a float32 copy of every block activation (and its gradient) per LoRA: the values are
    bit-identical without it. Training always runs under autocast or wholly in float32.
    """
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False
