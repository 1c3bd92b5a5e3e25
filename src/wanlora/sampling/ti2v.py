"""TI2V-5B inference, both ways, on our loaded model: text-to-video and image-to-video.

The official sampler (W = Wan-Video/Wan2.2 wan/textimage2video.py) with one model, no
expert switch:

    text-to-video   noise [48, 1 + (F-1)//4, H/16, W/16]; every token at the step's t
    image-to-video  the image resized to cover W x H (LANCZOS) and centre-cropped (W :461-474),
                    its Wan 2.2 VAE latent put in latent frame 0 (W :551) and put back after
                    every solver step (W :598); frame 0's tokens get t = 0, the others t
                    (per-token timesteps, W :571-578)

Classifier-free guidance with the negative prompt at `guidance_scale` (5.0 for the 5B), on
UniPC flow-matching sigmas with the recipe's inference shift (pipeline.flow_scheduler), as
the two-expert renderer. Prompt embeddings are ours, zero-padded to 512 rows, in float32 (as
training feeds them). One sample at a time: a video's activations dwarf any batching gain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from ..errors import WanloraError
from ..models.precision import autocast
from ..models.text_encoder import TEXT_LEN, pad_context
from ..models.time_embedding import ti2v_token_timesteps
from ..models.vae import decode_video, encode_latents, latent_frames
from .pipeline import flow_scheduler

TI2V_SIZE_STEP = 32  # the Wan 2.2 VAE's 16x stride x the DiT's 2x2 patch
LATENT_CHANNELS = 48
VAE_STRIDE = 16


@dataclass
class Ti2vSpec:
    """What to render: one video (or image, at 1 frame) per (context, seed) pair."""

    contexts: list[torch.Tensor]  # (L_i, D) each, unpadded
    seeds: list[int]
    negative: torch.Tensor | None  # (L, D); None: no classifier-free guidance
    steps: int
    width: int
    height: int
    frames: int  # 4n + 1
    guidance_scale: float
    shift: float
    image: np.ndarray | None = None  # uint8 (H, W, 3) at width x height: image-to-video
    # filled in by render_ti2v: per solver step, (t of frame 0's tokens, t of the last one)
    timesteps_seen: list[tuple[float, float]] = field(default_factory=list)


def check_ti2v_size(width: int, height: int, frames: int) -> None:
    for side in (width, height):
        if side < TI2V_SIZE_STEP or side % TI2V_SIZE_STEP:
            raise WanloraError(
                f"sample size {width}x{height}: TI2V-5B needs sides that are multiples of 32",
                "pass e.g. --size 1280x704 (the 5B model's 720p) or 704x1280",
            )
    if frames < 1 or (frames - 1) % 4:
        raise WanloraError(
            f"--frames {frames}: a Wan video has 4n+1 frames", "pass e.g. --frames 121 or 1"
        )


def fit_image(path: Path, width: int, height: int) -> np.ndarray:
    """The conditioning image scaled to cover width x height (LANCZOS), centre-cropped."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except FileNotFoundError:
        raise WanloraError(
            f"{path}: image not found", "pass an existing image to --image"
        ) from None
    except OSError as exc:
        raise WanloraError(f"{path}: not a readable image ({exc})", "pass a PNG or JPEG") from None
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    pixels = ((video.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def render_ti2v(
    model: nn.Module, vae: nn.Module, spec: Ti2vSpec, *, device: torch.device, dtype: torch.dtype
) -> list[np.ndarray]:
    """uint8 (F, H, W, 3) frames for every (context, seed) in `spec`; the model keeps its
    LoRA and multiplier and is left in eval mode on `device`."""
    if len(spec.contexts) != len(spec.seeds):
        raise ValueError("one seed per context")
    check_ti2v_size(spec.width, spec.height, spec.frames)
    model.eval().to(device)
    vae.to(device)
    shape = (
        1,
        LATENT_CHANNELS,
        latent_frames(spec.frames),
        spec.height // VAE_STRIDE,
        spec.width // VAE_STRIDE,
    )
    image_latent = None
    if spec.image is not None:
        image_latent = encode_latents(vae, spec.image).to(device, torch.float32)
    guided = spec.negative is not None and spec.guidance_scale > 1.0
    negative = pad_context(spec.negative.float(), TEXT_LEN)[None].to(device) if guided else None
    videos = []
    for context, seed in zip(spec.contexts, spec.seeds, strict=True):
        context = pad_context(context.float(), TEXT_LEN)[None].to(device)
        generator = torch.Generator("cpu").manual_seed(seed)
        latent = torch.randn(shape, generator=generator).to(device)
        if image_latent is not None:
            latent[:, :, :1] = image_latent
        scheduler = flow_scheduler(spec.shift)
        scheduler.set_timesteps(spec.steps, device=device)
        for t in scheduler.timesteps:
            timestep = t.float().view(1).to(device)  # text-to-video: every token at t
            if image_latent is not None:  # frame 0's tokens at 0
                timestep = ti2v_token_timesteps(timestep, *shape[2:], clean_first_frame=True)
            spec.timesteps_seen.append(
                (float(timestep.flatten()[0]), float(timestep.flatten()[-1]))
            )
            prediction = _predict(model, latent, timestep, context, dtype)
            if negative is not None:
                unconditional = _predict(model, latent, timestep, negative, dtype)
                prediction = unconditional + spec.guidance_scale * (prediction - unconditional)
            latent = scheduler.step(prediction, t, latent, return_dict=False)[0]
            if image_latent is not None:
                latent[:, :, :1] = image_latent  # the image stays the first frame
        videos.append(to_uint8_frames(decode_video(vae, latent)[0]))
    return videos


def _predict(model, latent, timestep, context, dtype) -> torch.Tensor:
    with autocast(latent.device, dtype):  # the transformer computes as in training
        return model(
            hidden_states=latent.to(dtype),
            timestep=timestep,
            encoder_hidden_states=context,
            return_dict=False,
        )[0].float()
