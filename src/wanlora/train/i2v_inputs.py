"""The DiT input of an image-to-video (I2V-A14B) step: the noisy latent with its conditioning.

The I2V expert takes 36 channels, concat([noisy latent 16, mask 4, y 16]) along the channel
axis (W wan/modules/model.py:444-445: the official model concatenates x and y itself;
diffusers' WanTransformer3DModel takes the concatenation). The conditioning (mask + y, 20
channels) comes from the cache (cache/i2v_conditioning.py), one per item, as the third
tensor of the item's sample; it is the same at every timestep and is never noised. The
target stays the 16-channel velocity of the latent alone, over every latent frame (as
musubi-tuner trains it: target = noise - latents).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def with_conditioning(
    noisy: torch.Tensor, samples: Sequence[tuple[torch.Tensor, ...]]
) -> torch.Tensor:
    """(B, 16, T, h, w) noisy latents -> the DiT's input: unchanged for items without a
    conditioning (text-to-video), else (B, 36, T, h, w) with each item's mask and y."""
    if all(len(sample) < 3 for sample in samples):
        return noisy
    if any(len(sample) < 3 for sample in samples):
        raise ValueError("a batch mixes items with and without I2V conditioning")
    conditioning = torch.stack([sample[2] for sample in samples]).to(noisy)
    if conditioning.shape[0:1] + conditioning.shape[2:] != noisy.shape[0:1] + noisy.shape[2:]:
        raise ValueError(
            f"I2V conditioning {tuple(conditioning.shape)} does not match the latents "
            f"{tuple(noisy.shape)}; the cache is stale: run `wanlora cache` again"
        )
    return torch.cat([noisy, conditioning], dim=1)
