"""Memory the memory model's T2V calibration does not see: per-token time modulations and
latent channels other than 16 in / 16 out.

Per-token timesteps (TI2V-5B, a batch with an image-to-video item: train/ti2v.py). diffusers'
WanTransformer3DModel (0.42) then builds the time projection per token, (B, S, 6, dim) in
float32 instead of (B, 6, dim), and every block adds its modulation table to it per token:

    forward, once   the projection (B, S, 6 dim) and the time embedding (B, S, dim), both
                    float32 and alive through the whole forward; the head saves its
                    (1 + scale) (B, S, dim) float32 for backward
                    -> SHARED_MODULATION_BYTES = 24 + 4 + 4 bytes per token per model-width channel
    each block      eager: `table + temb` (B, S, 6, dim) float32, kept whole because backward
                    saves two of its chunks (the gates, views of it), plus (1 + scale) of the
                    attention and of the FFN (B, S, dim) float32 each: 24 + 8 = 32 bytes
                    compiled: the partitioner that inductor uses (AOTAutograd's min-cut)
                    saves the two gates and the two (1 + scale) as separate (B, S, dim)
                    float32 buffers: 16 bytes (found with torch 2.11 on the tiny block)
                    -> held by every block that is not recomputed, and by the block being
                    rebuilt in backward

With one timestep per item these are (B, 6, dim) and (B, dim): nothing per token, and the
calibration (at 16 in / 16 out channels, scalar timesteps) holds them already. The eager
counts are pinned by tests/test_token_memory.py, which counts what autograd saves in the
real model.

Latent channels: a step holds its float32 input latents (C_in channels) and the float32
target, and the loss saves the float32 difference (C_out each), 4 latent elements a token
(patch 1x2x2): 16 bytes a token per input channel, 32 per output channel. The calibration
holds T2V's 16 / 16; I2V-A14B (36 in) and TI2V-5B (48 / 48) add the difference. Their
weights (the patch embedding's in-channels, the head's out-channels) are counted from the
file (DitShape.from_header) or by DitShape.wan.
"""

from __future__ import annotations

# bytes per token per model-width channel (float32 = 4 bytes)
SHARED_MODULATION_BYTES = 6 * 4 + 4 + 4  # projection + embedding + the head's saved scale
KEPT_MODULATION_BYTES = 6 * 4 + 2 * 4  # eager, per block: table + temb, 2 (1 + scale)
KEPT_MODULATION_BYTES_COMPILED = 4 * 4  # compiled: 2 gates + 2 (1 + scale)
# bytes per token per latent channel: 4 float32 elements a token
INPUT_BYTES_PER_CHANNEL = 4 * 4  # the input latents
OUTPUT_BYTES_PER_CHANNEL = 2 * 4 * 4  # the target and the loss's saved difference
CALIBRATED_CHANNELS = (16, 16)  # T2V's in / out, inside the calibration


def kept_modulation_bytes(dim: int, tokens: int, compiled: bool) -> int:
    """Per-token modulation memory one block keeps for backward (0 when recomputed)."""
    per = KEPT_MODULATION_BYTES_COMPILED if compiled else KEPT_MODULATION_BYTES
    return per * dim * tokens


def per_token_modulation_bytes(
    dim: int, tokens: int, *, kept: int, rebuilt: bool, compiled: bool
) -> int:
    """What per-token timesteps add to the peak: the shared projection and embedding, and
    the modulations of the `kept` blocks and (`rebuilt`) of the block recomputed in backward."""
    blocks = kept + int(rebuilt)
    shared = SHARED_MODULATION_BYTES * dim * tokens
    return shared + blocks * kept_modulation_bytes(dim, tokens, compiled)


def latent_channel_bytes(in_channels: int, out_channels: int, tokens: int) -> int:
    """What latent channels other than T2V's 16 / 16 add: input, target, loss difference."""
    calibrated_in, calibrated_out = CALIBRATED_CHANNELS
    extra = INPUT_BYTES_PER_CHANNEL * (in_channels - calibrated_in)
    extra += OUTPUT_BYTES_PER_CHANNEL * (out_channels - calibrated_out)
    return extra * tokens
