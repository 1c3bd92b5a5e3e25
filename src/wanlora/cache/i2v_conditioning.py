"""Image-to-video (I2V-A14B) conditioning: the 20 channels the DiT sees beside the noisy latent.

The official I2V sampler (W wan/image2video.py:289-323, WAN22_MODELS.md section 5) builds,
for F frames (4n + 1) and T = 1 + (F-1)//4 latent frames:
- the mask, 4 channels: one per pixel frame inside a latent frame, latent frame 0 standing
  for pixel frame 0 repeated 4 times; 1 where the frame is given (pixel frame 0), else 0.
  So [4, T, h, w] is 1 on latent frame 0 and 0 on every other.
- y, 16 channels: the Wan 2.1 VAE's normalised latent of the video [first frame, then
  F-1 frames of pixel value 0 in [-1, 1]] -- mid-grey frames, whose VAE code is not zero.
and hands the DiT cat([mask, y]) (20 channels); the DiT concatenates it after the noisy
latent: 16 + 4 + 16 = 36 input channels. musubi-tuner caches the same y with `--i2v`.

For training, the first frame is the clip's own first frame, already resized and cropped
into the clip's bucket (what the clip's latents were encoded from). An image item is a
1-frame clip: mask 1, y its own latent. Entries are keyed like latents (keys.py): the
source's content, which frame starts the clip, its length, the bucket and the VAE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..dataset.items import DatasetItem
from .keys import _key

CONDITIONING_DIR = "i2v_conditioning"  # inside the project's cache folder
TENSOR_NAME = "conditioning"  # the tensor's name inside an entry
MASK_CHANNELS = 4  # = the VAE's temporal stride: pixel frames per latent frame


def conditioning_mask(frames: int, latent_height: int, latent_width: int) -> torch.Tensor:
    """The official I2V mask for a clip of `frames` (4n + 1): float32 (4, T, h, w).

    Pixel frame k is given (1) or generated (0); only frame 0 is given. Latent frame 0
    covers pixel frame 0 (repeated 4 times), latent frame j >= 1 covers pixel frames
    4j-3 .. 4j; mask channel c of latent frame j is the c-th of those pixel frames."""
    if frames < 1 or (frames - 1) % MASK_CHANNELS:
        raise ValueError(f"a clip has 4n + 1 frames, got {frames}")
    given = torch.zeros(frames)
    given[0] = 1.0
    per_latent = torch.cat([given[:1].repeat(MASK_CHANNELS), given[1:]])  # 4T pixel slots
    mask = per_latent.view(-1, MASK_CHANNELS).t()  # (4, T): channel c, latent frame j
    return mask[:, :, None, None].expand(-1, -1, latent_height, latent_width).contiguous()


def conditioning_video(first_frame: np.ndarray, frames: int) -> torch.Tensor:
    """(1, 3, F, H, W) float32 in [-1, 1]: the uint8 (H, W, 3) first frame as x / 127.5 - 1
    (as every training frame), then F - 1 frames of 0 (mid-grey)."""
    array = np.asarray(first_frame)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) frame, got {array.dtype} {array.shape}")
    first = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 127.5 - 1.0
    video = torch.zeros(1, 3, frames, *first.shape[1:])
    video[0, :, 0] = first
    return video


def encode_conditioning(vae, first_frame: np.ndarray, frames: int) -> torch.Tensor:
    """cat([mask, y]) for a clip of `frames` starting at `first_frame`: float32 (20, T, h, w)."""
    from ..models.vae import encode_pixel_video  # torch/diffusers models: loaded on first use

    y = encode_pixel_video(vae, conditioning_video(first_frame, frames))[0].float().cpu()
    mask = conditioning_mask(frames, y.shape[-2], y.shape[-1])
    return torch.cat([mask, y])


def conditioning_key(content_sha256: str, item: DatasetItem, vae_identity: str) -> str:
    """(source content, first frame index, frames, bucket, VAE file + dtype) -> the key."""
    start = 0 if item.clip is None else item.clip.frame_indices[0]
    bucket = f"{item.bucket[0]}x{item.bucket[1]}"
    return _key("i2v", content_sha256, str(start), str(item.frames), bucket, vae_identity)


def conditioning_path(cache_dir: Path, content_sha256: str, item: DatasetItem, vae_id: str) -> Path:
    return (
        cache_dir
        / CONDITIONING_DIR
        / f"{conditioning_key(content_sha256, item, vae_id)}.safetensors"
    )


def first_frame(pixels: np.ndarray) -> np.ndarray:
    """The first frame of an item's pixels: an image (H, W, 3) or a clip (F, H, W, 3)."""
    return pixels if pixels.ndim == 3 else pixels[0]
