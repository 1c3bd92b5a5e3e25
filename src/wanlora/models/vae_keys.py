"""Original Wan VAE key names -> diffusers AutoencoderKLWan parameter names (Wan 2.1 VAE).

Both Wan VAEs are built from the same parts (residual block, attention block, resample),
named alike in the original code and in diffusers; only how the parts nest differs. The
parts and the renaming helpers are here with the Wan 2.1 table; vae22.py builds the Wan 2.2
table from the same parts.
"""

from __future__ import annotations

# Part of a residual block, attention block or resample: original name -> diffusers name.
RESIDUAL_BLOCK = {
    "residual.0": "norm1",
    "residual.2": "conv1",
    "residual.3": "norm2",
    "residual.6": "conv2",
    "shortcut": "conv_shortcut",
}
ATTENTION_BLOCK = {"norm": "norm", "to_qkv": "to_qkv", "proj": "proj"}
RESAMPLE = {"resample.1": "resample.1", "time_conv": "time_conv"}
LEAVES = ("weight", "bias", "gamma")

# The Wan 2.1 VAE: 4 levels (widths base x 1, 2, 4, 4), 2 residual blocks per level in the
# encoder (3 in the decoder), a spatial resample between levels.
NUM_LEVELS = 4


def add_modules(table: dict[str, str], original: str, ours: str, parts: dict[str, str]) -> None:
    """Add `original.<part>` -> `ours.<part>` for every part of a block."""
    for original_part, our_part in parts.items():
        table[f"{original}.{original_part}"] = f"{ours}.{our_part}"


def map_key(name: str, table: dict[str, str]) -> str | None:
    """Rename a parameter by its module with `table`; None for an unknown key."""
    module, _, leaf = name.rpartition(".")
    if module in table and leaf in LEAVES:
        return f"{table[module]}.{leaf}"
    return None


def shared_vae_modules() -> dict[str, str]:
    """The modules the Wan 2.1 and Wan 2.2 VAEs name alike: quant convs, heads, middles."""
    table = {
        "conv1": "quant_conv",
        "conv2": "post_quant_conv",
        "encoder.conv1": "encoder.conv_in",
        "encoder.head.0": "encoder.norm_out",
        "encoder.head.2": "encoder.conv_out",
        "decoder.conv1": "decoder.conv_in",
        "decoder.head.0": "decoder.norm_out",
        "decoder.head.2": "decoder.conv_out",
    }
    for side in ("encoder", "decoder"):
        # middle = [residual, attention, residual]
        add_modules(table, f"{side}.middle.0", f"{side}.mid_block.resnets.0", RESIDUAL_BLOCK)
        add_modules(table, f"{side}.middle.1", f"{side}.mid_block.attentions.0", ATTENTION_BLOCK)
        add_modules(table, f"{side}.middle.2", f"{side}.mid_block.resnets.1", RESIDUAL_BLOCK)
    return table


def vae_module_table() -> dict[str, str]:
    """Original Wan 2.1 VAE module -> diffusers AutoencoderKLWan module, for every module."""
    table = shared_vae_modules()

    # Encoder: one flat list in both layouts, [res, res, resample] per level, same indices.
    index = 0
    for level in range(NUM_LEVELS):
        for _ in range(2):
            add_modules(
                table,
                f"encoder.downsamples.{index}",
                f"encoder.down_blocks.{index}",
                RESIDUAL_BLOCK,
            )
            index += 1
        if level != NUM_LEVELS - 1:
            add_modules(
                table, f"encoder.downsamples.{index}", f"encoder.down_blocks.{index}", RESAMPLE
            )
            index += 1

    # Decoder: Wan keeps a flat list [res, res, res, upsample] per level; diffusers groups
    # each level into up_blocks.L with resnets.0-2 and upsamplers.0.
    index = 0
    for level in range(NUM_LEVELS):
        for resnet in range(3):
            add_modules(
                table,
                f"decoder.upsamples.{index}",
                f"decoder.up_blocks.{level}.resnets.{resnet}",
                RESIDUAL_BLOCK,
            )
            index += 1
        if level != NUM_LEVELS - 1:
            add_modules(
                table,
                f"decoder.upsamples.{index}",
                f"decoder.up_blocks.{level}.upsamplers.0",
                RESAMPLE,
            )
            index += 1
    return table


VAE_MODULES = vae_module_table()
_VAE_MODULES_INVERSE = {ours: original for original, ours in VAE_MODULES.items()}


def wan_vae_key_to_diffusers(name: str) -> str | None:
    """`decoder.upsamples.4.shortcut.weight` -> `decoder.up_blocks.1.resnets.0.conv_shortcut.weight`."""
    return map_key(name, VAE_MODULES)


def diffusers_vae_key_to_wan(name: str) -> str | None:
    return map_key(name, _VAE_MODULES_INVERSE)
