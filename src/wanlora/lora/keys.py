"""Where LoRA keys are named: which DiT linears get a LoRA, and what their saved keys are.

Targets and names follow the reference trainer (musubi-tuner's networks.lora_wan): every
nn.Linear inside each transformer block, i.e. per block self_attn.{q,k,v,o},
cross_attn.{q,k,v,o}, ffn.0 and ffn.2 (10 per block, 400 for 40 blocks), nothing outside
the blocks. A module is saved as `lora_unet_` + its original Wan path with dots replaced by
underscores (`lora_unet_blocks_0_self_attn_q`) with `.lora_down.weight` (rank x in),
`.lora_up.weight` (out x rank) and `.alpha`. ComfyUI and diffusers load this format.
"""

from __future__ import annotations

import re

PREFIX = "lora_unet_"
DOWN = ".lora_down.weight"  # (rank, in)
UP = ".lora_up.weight"  # (out, rank)
ALPHA = ".alpha"  # a scalar

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


def is_target(diffusers_name: str) -> bool:
    """True for a block linear's diffusers module name (`blocks.3.ffn.net.2`)."""
    match = _BLOCK_PATH.match(diffusers_name)
    return bool(match) and match.group(2) in BLOCK_LINEARS


def saved_module_name(diffusers_name: str) -> str:
    """`blocks.0.attn1.to_q` -> `lora_unet_blocks_0_self_attn_q` (the reference's key stem)."""
    match = _BLOCK_PATH.match(diffusers_name)
    if not match or match.group(2) not in BLOCK_LINEARS:
        raise ValueError(f"{diffusers_name} is not a LoRA target")
    original = f"blocks.{match.group(1)}.{BLOCK_LINEARS[match.group(2)]}"
    return PREFIX + original.replace(".", "_")


def module_of_key(key: str) -> str:
    """A saved key's module stem: `..._q.lora_down.weight` / `..._q.alpha` -> `..._q`."""
    return key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0]


def down_keys(tensors: dict) -> list[str]:
    """The `.lora_down.weight` keys of a saved LoRA, sorted (one per module)."""
    return sorted(k for k in tensors if k.endswith(DOWN))
