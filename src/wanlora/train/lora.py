"""LoRA on the Wan DiT: which linears get one, how they are initialised, and how they are named.

Targets and names follow the reference trainer (musubi-tuner's networks.lora_wan):
every nn.Linear inside each transformer block, i.e. per block self_attn.{q,k,v,o},
cross_attn.{q,k,v,o}, ffn.0 and ffn.2 (10 per block, 400 for 40 blocks), nothing outside
the blocks. A module is saved as `lora_unet_` + its original Wan path with dots replaced by
underscores (`lora_unet_blocks_0_self_attn_q`) with `.lora_down.weight` (rank x in),
`.lora_up.weight` (out x rank) and `.alpha`. ComfyUI and diffusers load this format.

The layers themselves are peft's: lora_A = lora_down (Kaiming-uniform, a=sqrt(5)),
lora_B = lora_up (zeros), output = base(x) + up(down(x)) * alpha / rank, as the reference.
"""

from __future__ import annotations

import re

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from ..recipes.schema import LoraSettings

ADAPTER = "default"

# diffusers' module path inside a block -> the original Wan path (what the saved keys use)
BLOCK_LINEARS: dict[str, str] = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_BLOCK_PATH = re.compile(r"^blocks\.(\d+)\.(.+)$")


def lora_target_modules(model: torch.nn.Module) -> list[str]:
    """The diffusers module names that get a LoRA, in model order."""
    targets = []
    for name, module in model.named_modules():
        match = _BLOCK_PATH.match(name)
        if match and match.group(2) in BLOCK_LINEARS and isinstance(module, torch.nn.Linear):
            targets.append(name)
    return targets


def saved_module_name(diffusers_name: str) -> str:
    """`blocks.0.attn1.to_q` -> `lora_unet_blocks_0_self_attn_q` (the reference's key stem)."""
    match = _BLOCK_PATH.match(diffusers_name)
    if not match or match.group(2) not in BLOCK_LINEARS:
        raise ValueError(f"{diffusers_name} is not a LoRA target")
    original = f"blocks.{match.group(1)}.{BLOCK_LINEARS[match.group(2)]}"
    return "lora_unet_" + original.replace(".", "_")


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
        tensors[f"{stem}.lora_down.weight"] = down.to("cpu", dtype).contiguous()
        tensors[f"{stem}.lora_up.weight"] = up.to("cpu", dtype).contiguous()
        tensors[f"{stem}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return tensors


def load_lora_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved LoRA weights (reference key format) into the model's LoRA layers."""
    layers = lora_layers(model)
    expected = {saved_module_name(name) for name in layers}
    found = {
        key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0]
        for key in tensors
    }
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
            down.copy_(tensors[f"{stem}.lora_down.weight"].to(down.dtype))
            up.copy_(tensors[f"{stem}.lora_up.weight"].to(up.dtype))


def set_lora_multiplier(model: torch.nn.Module, multiplier: float) -> None:
    """Scale every LoRA's contribution (the reference's `multiplier`; 1.0 in training)."""
    for layer in lora_layers(model).values():
        layer.scaling[ADAPTER] = multiplier * layer.lora_alpha[ADAPTER] / layer.r[ADAPTER]
