"""LoRA layers on the Wan DiT: inject, read and write their weights, scale them.

Which linears get a LoRA and how their saved keys are spelled: keys.py. The layers
themselves are peft's: lora_A = lora_down (Kaiming-uniform, a=sqrt(5)), lora_B = lora_up
(zeros), output = base(x) + up(down(x)) * alpha / rank, as the reference. Training (train/)
and sampling (sampling/) both put LoRAs on a DiT through this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from ..recipes.schema import LoraSettings
from .keys import ALPHA, DOWN, UP, is_target, module_of_key, saved_module_name

ADAPTER = "default"


def lora_target_modules(model: torch.nn.Module) -> list[str]:
    """The diffusers module names that get a LoRA, in model order."""
    targets = []
    for name, module in model.named_modules():
        if is_target(name) and isinstance(module, torch.nn.Linear):
            targets.append(name)
    return targets


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> list[str]:
    """Inject LoRA layers (float32, trainable) into the DiT; freeze everything else."""
    targets = lora_target_modules(model)
    if not targets:
        raise ValueError("the model has no transformer-block linears to put a LoRA on")
    model.requires_grad_(False)
    config = LoraConfig(
        r=settings.network_dim,
        lora_alpha=settings.network_alpha,
        lora_dropout=settings.network_dropout or 0.0,
        target_modules=targets,
        init_lora_weights=True,  # A: kaiming_uniform(a=sqrt(5)), B: zeros -- as the reference
        bias="none",
    )
    model.add_adapter(config, adapter_name=ADAPTER)
    for param in lora_parameters(model):
        # the reference keeps LoRA weights in float32 (full_fp16/bf16 off)
        param.data = param.data.float()
        param.requires_grad_(True)
    return targets


def lora_layers(model: torch.nn.Module) -> dict[str, LoraLayer]:
    """diffusers module name -> the peft LoRA layer wrapping it."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def lora_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = []
    for layer in lora_layers(model).values():
        params.append(layer.lora_A[ADAPTER].weight)
        params.append(layer.lora_B[ADAPTER].weight)
    return params


def lora_state_dict(
    model: torch.nn.Module, alpha: float, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The LoRA in the reference's saved key format, cast to `dtype`."""
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model).items():
        stem = saved_module_name(name)
        down = layer.lora_A[ADAPTER].weight.detach()
        up = layer.lora_B[ADAPTER].weight.detach()
        tensors[f"{stem}{DOWN}"] = down.to("cpu", dtype).contiguous()
        tensors[f"{stem}{UP}"] = up.to("cpu", dtype).contiguous()
        tensors[f"{stem}{ALPHA}"] = torch.tensor(float(alpha), dtype=dtype)
    return tensors


def load_lora_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved LoRA weights (reference key format) into the model's LoRA layers."""
    layers = lora_layers(model)
    expected = {saved_module_name(name) for name in layers}
    found = {module_of_key(key) for key in tensors}
    if expected != found:
        missing, extra = sorted(expected - found)[:3], sorted(found - expected)[:3]
        raise ValueError(
            f"LoRA modules do not match the model (missing {missing}, unexpected {extra})"
        )
    with torch.no_grad():
        for name, layer in layers.items():
            stem = saved_module_name(name)
            down = layer.lora_A[ADAPTER].weight
            up = layer.lora_B[ADAPTER].weight
            down.copy_(tensors[f"{stem}{DOWN}"].to(down.dtype))
            up.copy_(tensors[f"{stem}{UP}"].to(up.dtype))


def set_lora_multiplier(model: torch.nn.Module, multiplier: float) -> None:
    """Scale every LoRA's contribution (the reference's `multiplier`; 1.0 in training)."""
    for layer in lora_layers(model).values():
        layer.scaling[ADAPTER] = multiplier * layer.lora_alpha[ADAPTER] / layer.r[ADAPTER]


@contextlib.contextmanager
def lora_scaled(model: torch.nn.Module, multiplier: float) -> Iterator[None]:
    """Every LoRA at `multiplier` inside the block, then each layer's own scaling back,
    exactly as it was. At 0 the model computes the base model's output (base(x) + 0): the
    cheap "LoRA off" of validation.py, with no second model and no change to any weight."""
    layers = lora_layers(model).values()
    saved = [layer.scaling[ADAPTER] for layer in layers]
    set_lora_multiplier(model, multiplier)
    try:
        yield
    finally:
        for layer, scaling in zip(layers, saved, strict=True):
            layer.scaling[ADAPTER] = scaling
