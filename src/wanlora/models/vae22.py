"""The Wan 2.2 VAE (TI2V-5B's) in the original Wan key layout, as diffusers' AutoencoderKLWan.

The file is wan2.2_vae.safetensors, with the key names of the official Wan2_2_VAE
(W = Wan-Video/Wan2.2 wan/modules/vae2_2.py): z_dim 48, encoder base width 160, decoder
base width 256, widths x [1, 2, 4, 4], temporal downsampling [False, True, True].

What differs from the Wan 2.1 VAE, and how diffusers (0.42) holds it:
- Input and output are patchified 2x2 (RGB 3 -> 12 channels), so the spatial stride is 16
  (patch 2 x three stride-2 levels); diffusers: patch_size=2, in/out_channels=12.
- Each level is one residual block with a parameter-free shortcut (AvgDown3D / DupUp3D);
  diffusers: is_residual=True. Keys nest one level deeper:
  `encoder.downsamples.I.downsamples.J` (J 0-1 residual blocks, 2 the resample) ->
  `encoder.down_blocks.I.resnets.J` / `.downsampler`;
  `decoder.upsamples.I.upsamples.J` (J 0-2 residual blocks, 3 the resample) ->
  `decoder.up_blocks.I.resnets.J` / `.upsampler`.
- The decoder is wider than the encoder (diffusers: decoder_base_dim).
- Its own 48 latent statistics (below); the official wrapper normalises inside encode and
  decode; here they live in the model config (latents_mean / latents_std) and
  models/vae.py applies them, as for the Wan 2.1 VAE.
Frames are the same as Wan 2.1's: frame 0 alone, then chunks of 4 (latent frames
1 + (F-1)//4); decoding T latent frames gives 4T-3.

Widths are read off the shapes, so the tiny test VAE (same key names) takes the same path.
"""

from __future__ import annotations

from wanlora.models.vae_keys import (
    RESAMPLE,
    RESIDUAL_BLOCK,
    add_modules,
    map_key,
    shared_vae_modules,
)

NUM_LEVELS = 4
LATENT_CHANNELS = 48
PATCH_SIZE = 2
PATCHED_CHANNELS = 3 * PATCH_SIZE * PATCH_SIZE  # 12
SPATIAL_STRIDE = 16
TEMPORAL_STRIDE = 4
ENCODER_RESIDUAL_BLOCKS = 2  # per level (the decoder has one more)

# The published Wan 2.2 latent statistics (W wan/modules/vae2_2.py:904-1011, Wan2_2_VAE).
LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip


def vae22_config(base_dim: int = 160, decoder_base_dim: int = 256) -> dict:
    """AutoencoderKLWan arguments for the Wan 2.2 VAE (full size: 160 / 256)."""
    return {
        "base_dim": base_dim,
        "decoder_base_dim": decoder_base_dim,
        "z_dim": LATENT_CHANNELS,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": ENCODER_RESIDUAL_BLOCKS,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "is_residual": True,
        "in_channels": PATCHED_CHANNELS,
        "out_channels": PATCHED_CHANNELS,
        "patch_size": PATCH_SIZE,
        "scale_factor_temporal": TEMPORAL_STRIDE,
        "scale_factor_spatial": SPATIAL_STRIDE,
        "latents_mean": list(LATENTS_MEAN),
        "latents_std": list(LATENTS_STD),
    }


def vae22_module_table() -> dict[str, str]:
    """Original Wan 2.2 VAE module -> diffusers AutoencoderKLWan module, for every module."""
    table = shared_vae_modules()  # quant convs, heads, middles: named as in Wan 2.1

    for level in range(NUM_LEVELS):
        last = level == NUM_LEVELS - 1  # the deepest level does not resample
        original = f"encoder.downsamples.{level}.downsamples"
        ours = f"encoder.down_blocks.{level}"
        for block in range(ENCODER_RESIDUAL_BLOCKS):
            add_modules(table, f"{original}.{block}", f"{ours}.resnets.{block}", RESIDUAL_BLOCK)
        if not last:
            add_modules(
                table, f"{original}.{ENCODER_RESIDUAL_BLOCKS}", f"{ours}.downsampler", RESAMPLE
            )

        original = f"decoder.upsamples.{level}.upsamples"
        ours = f"decoder.up_blocks.{level}"
        for block in range(ENCODER_RESIDUAL_BLOCKS + 1):
            add_modules(table, f"{original}.{block}", f"{ours}.resnets.{block}", RESIDUAL_BLOCK)
        if not last:
            add_modules(
                table, f"{original}.{ENCODER_RESIDUAL_BLOCKS + 1}", f"{ours}.upsampler", RESAMPLE
            )
    return table


VAE22_MODULES = vae22_module_table()
_VAE22_MODULES_INVERSE = {ours: original for original, ours in VAE22_MODULES.items()}


def wan22_vae_key_to_diffusers(name: str) -> str | None:
    """`decoder.upsamples.1.upsamples.3.time_conv.weight` -> `decoder.up_blocks.1.upsampler.time_conv.weight`."""
    return map_key(name, VAE22_MODULES)


def diffusers_vae22_key_to_wan(name: str) -> str | None:
    return map_key(name, _VAE22_MODULES_INVERSE)
