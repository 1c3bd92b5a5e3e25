"""Load the Wan 2.1 VAE (original Wan key layout) into diffusers' AutoencoderKLWan, and encode.

The file is wan_2.1_vae.safetensors (z_dim 16, stride 4x8x8, base width 96). The loader
reads the base width and z_dim off the shapes, so the tiny test VAE (same key names, base
width 4) takes the same path.
"""

from __future__ import annotations

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
from wanlora.models.files import read_safetensors_header, require_kind

# The Wan 2.1 VAE architecture: 4 levels (widths base x 1, 2, 4, 4), 2 residual blocks per
# level in the encoder (3 in the decoder), a spatial resample between levels.
NUM_LEVELS = 4
LATENT_CHANNELS = 16

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


def vae_module_table() -> dict[str, str]:
    """Original Wan VAE module -> diffusers AutoencoderKLWan module, for every module."""
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

    def add(original: str, ours: str, parts: dict[str, str]) -> None:
        for original_part, our_part in parts.items():
            table[f"{original}.{original_part}"] = f"{ours}.{our_part}"

    for side in ("encoder", "decoder"):
        # middle = [residual, attention, residual]
        add(f"{side}.middle.0", f"{side}.mid_block.resnets.0", RESIDUAL_BLOCK)
        add(f"{side}.middle.1", f"{side}.mid_block.attentions.0", ATTENTION_BLOCK)
        add(f"{side}.middle.2", f"{side}.mid_block.resnets.1", RESIDUAL_BLOCK)

    # Encoder: one flat list in both layouts, [res, res, resample] per level, same indices.
    index = 0
    for level in range(NUM_LEVELS):
        for _ in range(2):
            add(f"encoder.downsamples.{index}", f"encoder.down_blocks.{index}", RESIDUAL_BLOCK)
            index += 1
        if level != NUM_LEVELS - 1:
            add(f"encoder.downsamples.{index}", f"encoder.down_blocks.{index}", RESAMPLE)
            index += 1

    # Decoder: Wan keeps a flat list [res, res, res, upsample] per level; diffusers groups
    # each level into up_blocks.L with resnets.0-2 and upsamplers.0.
    index = 0
    for level in range(NUM_LEVELS):
        for resnet in range(3):
            add(
                f"decoder.upsamples.{index}",
                f"decoder.up_blocks.{level}.resnets.{resnet}",
                RESIDUAL_BLOCK,
            )
            index += 1
        if level != NUM_LEVELS - 1:
            add(f"decoder.upsamples.{index}", f"decoder.up_blocks.{level}.upsamplers.0", RESAMPLE)
            index += 1
    return table


VAE_MODULES = vae_module_table()
_VAE_MODULES_INVERSE = {ours: original for original, ours in VAE_MODULES.items()}


def _map(name: str, table: dict[str, str]) -> str | None:
    module, _, leaf = name.rpartition(".")
    if module in table and leaf in LEAVES:
        return f"{table[module]}.{leaf}"
    return None


def wan_vae_key_to_diffusers(name: str) -> str | None:
    """`decoder.upsamples.4.shortcut.weight` -> `decoder.up_blocks.1.resnets.0.conv_shortcut.weight`."""
    return _map(name, VAE_MODULES)


def diffusers_vae_key_to_wan(name: str) -> str | None:
    return _map(name, _VAE_MODULES_INVERSE)


def load_vae(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> AutoencoderKLWan:
    """Load wan_2.1_vae.safetensors (original Wan layout) into a frozen AutoencoderKLWan."""
    path = Path(path)
    header = read_safetensors_header(path)
    require_kind(path, set(header), "vae")
    base_dim = header["encoder.conv1.weight"][1][0]
    z_dim = header["conv2.weight"][1][0]
    if z_dim != LATENT_CHANNELS:
        raise WanloraError(
            f"{path} is a VAE with {z_dim} latent channels; the recipe needs the Wan 2.1 VAE "
            f"({LATENT_CHANNELS} channels)",
            "use wan_2.1_vae.safetensors",
        )
    device = torch.device(device)
    model = build_on_meta(lambda: AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim))
    with safe_open(str(path), framework="pt", device="cpu") as file:
        file_names = list(file.keys())
        check_key_sets(
            path,
            file_names,
            model,
            to_model=wan_vae_key_to_diffusers,
            to_file=diffusers_vae_key_to_wan,
            extra=(
                "the Wan 2.1 VAE",
                "use wan_2.1_vae.safetensors (Wan 2.2 5B's VAE and others are not supported)",
            ),
            missing="the Wan 2.1 VAE",
        )
        for name in file_names:
            tensor = file.get_tensor(name).to(device=device, dtype=dtype)
            assign_parameter(model, wan_vae_key_to_diffusers(name), tensor, path)  # type: ignore[arg-type]
    model.to(device)
    check_fully_loaded(model, path)
    model.eval()
    return model


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
    video = torch.from_numpy(np.array(array)).permute(0, 3, 1, 2)  # B, C, H, W (a writable copy)
    video = video.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    return video.unsqueeze(2).to(dtype)  # one frame: B, C, 1, H, W


@torch.no_grad()
def encode_latents(vae: AutoencoderKLWan, pixels) -> torch.Tensor:
    """uint8 HWC image(s) -> normalised latents (B, 16, 1, H/8, W/8) in the VAE's dtype.

    The encoder's mean is used (no sampling) and normalised per channel with the published
    Wan 2.1 latent statistics: (mu - mean[c]) / std[c], computed in float32.
    """
    parameter = next(vae.parameters())
    video = pixels_to_video(pixels, parameter.dtype, parameter.device)
    height, width = video.shape[-2:]
    if height % 8 or width % 8:
        raise ValueError(f"image size must be a multiple of 8, got {width}x{height}")
    mu = vae.encode(video).latent_dist.mean
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=mu.device)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=mu.device)
    latents = (mu.float() - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    return latents.to(parameter.dtype)


def frames_to_video(frames, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """uint8 (F, H, W, 3) or (B, F, H, W, 3) frames -> (B, 3, F, H, W) in [-1, 1] (x / 127.5 - 1)."""
    array = np.asarray(frames)
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected uint8 (B, F, H, W, 3) frames, got {array.dtype} {array.shape}")
    video = torch.from_numpy(np.array(array)).permute(0, 4, 1, 2, 3)  # a writable copy
    video = video.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    return video.to(dtype)


@torch.no_grad()
def encode_video_latents(vae: AutoencoderKLWan, frames) -> torch.Tensor:
    """uint8 clip frames, F = 4n + 1 -> normalised latents (B, 16, 1 + (F-1)//4, H/8, W/8),
    normalised like `encode_latents` (a 1-frame clip gives the same latents as the image)."""
    parameter = next(vae.parameters())
    video = frames_to_video(frames, parameter.dtype, parameter.device)
    count, height, width = video.shape[2:]
    if (count - 1) % 4:
        raise ValueError(f"a clip must have 4n + 1 frames (1, 5, 9, ..., 81), got {count}")
    if height % 8 or width % 8:
        raise ValueError(f"frame size must be a multiple of 8, got {width}x{height}")
    mu = vae.encode(video).latent_dist.mean
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=mu.device)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=mu.device)
    latents = (mu.float() - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    return latents.to(parameter.dtype)
