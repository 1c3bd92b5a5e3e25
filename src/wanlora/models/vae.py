"""Load a Wan VAE (original Wan key layout) into diffusers' AutoencoderKLWan; encode, decode.

Two VAEs, told apart by their latent channels (files.py):
- "wan2.1": wan_2.1_vae.safetensors (z_dim 16, stride 4x8x8, base width 96), the VAE of
  every 14B model (T2V-A14B, I2V-A14B).
- "wan2.2": wan2.2_vae.safetensors (z_dim 48, stride 4x16x16), TI2V-5B's (vae22.py).
Widths are read off the shapes, so the tiny test VAEs (same key names) take the same path.

Latents are normalised per channel with the VAE's published statistics, held in the
model's config (latents_mean / latents_std): encode gives (mu - mean) / std from the
encoder's mean (no sampling), decode takes z * std + mean and clamps to [-1, 1], as the
reference does for both VAEs. Frames: frame 0 alone, then chunks of 4, so F frames
(F = 4n + 1) give 1 + (F-1)//4 latent frames, and T latent frames decode to 4T - 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from safetensors import safe_open

from wanlora.errors import WanloraError
from wanlora.models.assign import (
    assign_parameter,
    build_on_meta,
    check_fully_loaded,
    check_key_sets,
)
from wanlora.models.files import VAE_WORDS, identify_shapes, read_safetensors_header, require_kind
from wanlora.models.vae22 import (
    diffusers_vae22_key_to_wan,
    vae22_config,
    wan22_vae_key_to_diffusers,
)
from wanlora.models.vae_keys import diffusers_vae_key_to_wan, wan_vae_key_to_diffusers

LATENT_CHANNELS = 16  # the Wan 2.1 VAE's
TEMPORAL_STRIDE = 4  # both VAEs
VAE_FILES = {"wan2.1": "wan_2.1_vae.safetensors", "wan2.2": "wan2.2_vae.safetensors"}
# kind -> (file key -> diffusers key, diffusers key -> file key)
KEY_MAPS = {
    "wan2.1": (wan_vae_key_to_diffusers, diffusers_vae_key_to_wan),
    "wan2.2": (wan22_vae_key_to_diffusers, diffusers_vae22_key_to_wan),
}

__all__ = [
    "VaeInfo",
    "decode_video",
    "decoded_frames",
    "diffusers_vae_key_to_wan",
    "encode_latents",
    "encode_pixel_video",
    "encode_video_latents",
    "infer_vae_info",
    "latent_frames",
    "load_vae",
    "vae_info_from_shapes",
    "vae_kind",
    "wan_vae_key_to_diffusers",
]


@dataclass(frozen=True)
class VaeInfo:
    """Which Wan VAE a file holds and its widths, read off the tensor shapes."""

    path: Path
    kind: str  # "wan2.1" | "wan2.2"
    z_dim: int
    base_dim: int
    decoder_base_dim: int

    @property
    def spatial_stride(self) -> int:
        return 16 if self.kind == "wan2.2" else 8

    def diffusers_config(self) -> dict:
        if self.kind == "wan2.2":
            return vae22_config(self.base_dim, self.decoder_base_dim)
        return {"base_dim": self.base_dim, "z_dim": self.z_dim}


def infer_vae_info(path: str | Path) -> VaeInfo:
    """Which Wan VAE a file is, from its header (no weights read)."""
    path = Path(path)
    header = read_safetensors_header(path)
    require_kind(path, set(header), "vae")
    return vae_info_from_shapes(path, {name: shape for name, (_, shape) in header.items()})


def vae_info_from_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> VaeInfo:
    """The VAE from tensor name -> shape; `path` is only for messages."""
    identity = identify_shapes(shapes)
    if identity.variant is None:
        raise WanloraError(
            f"{path} is {identity.description}, which this tool does not load",
            "use wan_2.1_vae.safetensors (14B models) or wan2.2_vae.safetensors (TI2V-5B)",
        )

    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise WanloraError(f"{path} is missing {name}; the file is incomplete or not a Wan VAE")
        return shapes[name]

    return VaeInfo(
        path=path,
        kind=identity.variant,
        z_dim=shape("conv2.weight")[0],
        base_dim=shape("encoder.conv1.weight")[0],
        # the decoder's last level runs at its base width
        decoder_base_dim=shape("decoder.head.2.weight")[1],
    )


def load_vae(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    kind: str | None = "wan2.1",
) -> AutoencoderKLWan:
    """Load a Wan VAE .safetensors (original layout) into a frozen AutoencoderKLWan.

    kind: the VAE the model needs, "wan2.1" (every 14B model) or "wan2.2" (TI2V-5B; see
        DitInfo.vae_kind); a file of the other kind is refused, naming what it is. None
        loads whichever the file is (vae_kind(model) tells which).
    """
    path = Path(path)
    info = infer_vae_info(path)
    if kind is not None and info.kind != kind:
        if kind not in VAE_FILES:
            raise ValueError(f"kind must be one of {sorted(VAE_FILES)} or None, got {kind!r}")
        raise WanloraError(
            f"{path} is {VAE_WORDS[info.kind]}; this model needs {VAE_WORDS[kind]}",
            f"use {VAE_FILES[kind]}",
        )
    to_model, to_file = KEY_MAPS[info.kind]
    device = torch.device(device)
    model = build_on_meta(lambda: AutoencoderKLWan(**info.diffusers_config()))
    with safe_open(str(path), framework="pt", device="cpu") as file:
        file_names = list(file.keys())
        check_key_sets(
            path,
            file_names,
            model,
            to_model=to_model,
            to_file=to_file,
            extra=(VAE_WORDS[info.kind], f"use {VAE_FILES[info.kind]} as published"),
            missing=VAE_WORDS[info.kind],
        )
        for name in file_names:
            tensor = file.get_tensor(name).to(device=device, dtype=dtype)
            assign_parameter(model, to_model(name), tensor, path)  # type: ignore[arg-type]
    model.to(device)
    check_fully_loaded(model, path)
    model.eval()
    return model


def vae_kind(vae: AutoencoderKLWan) -> str:
    """Which Wan VAE a loaded model is, "wan2.1" or "wan2.2" (by its latent channels)."""
    return "wan2.2" if vae.config.z_dim == 48 else "wan2.1"


def latent_frames(frames: int) -> int:
    """Latent frames of a clip of `frames` frames (4n + 1): 1 + (F-1)//4."""
    return 1 + (frames - 1) // TEMPORAL_STRIDE


def decoded_frames(latent_frames: int) -> int:
    """Frames that `latent_frames` latent frames decode to: 4T - 3."""
    return TEMPORAL_STRIDE * latent_frames - (TEMPORAL_STRIDE - 1)


def pixels_to_video(pixels, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """uint8 HWC image(s) -> (B, 3, 1, H, W) in [-1, 1] (x / 127.5 - 1), as the reference."""
    if isinstance(pixels, (list, tuple)):
        shapes = {np.asarray(p).shape for p in pixels}
        if len(shapes) != 1:
            raise ValueError(f"all images in a batch must have the same size, got {shapes}")
        array = np.stack([np.asarray(p) for p in pixels])
    else:
        array = np.asarray(pixels)
        if array.ndim == 3:
            array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected uint8 HWC RGB image(s), got {array.dtype} {array.shape}")
    return frames_to_video(array[:, None], dtype, device)


def frames_to_video(frames, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """uint8 (F, H, W, 3) or (B, F, H, W, 3) frames -> (B, 3, F, H, W) in [-1, 1]."""
    array = np.asarray(frames)
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 (B, F, H, W, 3) RGB frames, got {array.dtype} {array.shape}"
        )
    video = torch.from_numpy(np.array(array)).permute(0, 4, 1, 2, 3)  # a writable copy
    video = video.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    return video.to(dtype)


def _statistics(vae: AutoencoderKLWan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel latent mean and std, float32, shaped (1, C, 1, 1, 1)."""
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=device)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=device)
    return mean.view(shape), std.view(shape)


@torch.no_grad()
def _encode(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    stride = vae.config.scale_factor_spatial
    height, width = video.shape[-2:]
    if height % stride or width % stride:
        raise ValueError(f"image size must be a multiple of {stride}, got {width}x{height}")
    mu = vae.encode(video).latent_dist.mean
    mean, std = _statistics(vae, mu.device)
    return ((mu.float() - mean) / std).to(video.dtype)


def encode_latents(vae: AutoencoderKLWan, pixels) -> torch.Tensor:
    """uint8 HWC image(s) -> normalised latents (B, C, 1, H/s, W/s) in the VAE's dtype.

    C and s are the VAE's: 16 and 8 (Wan 2.1), 48 and 16 (Wan 2.2). The encoder's mean is
    normalised per channel, (mu - mean[c]) / std[c], in float32.
    """
    parameter = next(vae.parameters())
    return _encode(vae, pixels_to_video(pixels, parameter.dtype, parameter.device))


def encode_video_latents(vae: AutoencoderKLWan, frames) -> torch.Tensor:
    """uint8 (F, H, W, 3) or (B, F, H, W, 3) frames, F = 4n + 1 -> normalised latents
    (B, C, 1 + (F-1)//4, H/s, W/s) in the VAE's dtype (normalised as encode_latents)."""
    parameter = next(vae.parameters())
    video = frames_to_video(frames, parameter.dtype, parameter.device)
    count = video.shape[2]
    if (count - 1) % TEMPORAL_STRIDE:
        raise ValueError(
            f"a clip must have 4n + 1 frames (1, 5, 9, ..., 81), got {count}; the VAE would "
            f"drop the last {(count - 1) % TEMPORAL_STRIDE}"
        )
    return _encode(vae, video)


def encode_pixel_video(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """A float video (B, 3, F, H, W) already in [-1, 1] -> normalised latents, for pixels
    that uint8 frames cannot hold (I2V conditioning: frames of pixel value 0, mid-grey)."""
    parameter = next(vae.parameters())
    return _encode(vae, video.to(device=parameter.device, dtype=parameter.dtype))


@torch.no_grad()
def decode_video(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, C, T, h, w) -> video (B, 3, 4T-3, h*s, w*s), float32 in [-1, 1].

    z * std + mean in float32, decoded in the VAE's dtype, clamped to [-1, 1].
    """
    parameter = next(vae.parameters())
    mean, std = _statistics(vae, parameter.device)
    z = latents.to(device=parameter.device, dtype=torch.float32) * std + mean
    video = vae.decode(z.to(parameter.dtype), return_dict=False)[0]
    return video.float().clamp(-1.0, 1.0)
