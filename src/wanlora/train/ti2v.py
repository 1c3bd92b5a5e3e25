"""TI2V-5B training steps: text-to-video and image-to-video in one model, as inference uses it.

Wan 2.2 TI2V-5B is one model for both tasks (W = Wan-Video/Wan2.2 wan/textimage2video.py).
Its image-to-video inference puts the clean image latent in latent frame 0, re-imposes it
after every solver step, and gives frame 0's tokens timestep 0 while every other token gets
the step's t (per-token timesteps, `mask[:, ::2, ::2] * t`, W :551-578). Text-to-video gives
every token t. Training here makes the same two kinds of item:

    text-to-video   every latent frame noised at t; every token at the DiT timestep of t
    image-to-video  latent frame 0 = the clip's clean latent (the Wan 2.2 VAE is causal: a
                    clip's latent frame 0 encodes its first frame alone, i.e. it is the image
                    latent inference conditions on), its tokens at timestep 0; the loss leaves
                    frame 0 out (`[training] ti2v_mask_first_frame`): the model must produce
                    only the frames after it
    images          one latent frame: always text-to-image (nothing would be left to produce)

What is ours, because the official TI2V training is unpublished (WAN22_MODELS.md section 5):
the share of clips trained image-to-video (`[training] ti2v_i2v_share`, default 0.5) and the
loss mask. Which clips train image-to-video is drawn from the run's seeded stream, after the
noise and the timesteps (`draws`), so it is fixed per clip and epoch by the seed, replayed by
data-parallel ranks and restored bit-identically on resume.

The DiT sees timesteps as the reference trainer makes them (1000 t + 1, timesteps.py) on the
noised tokens and exactly 0 on the clean ones, as inference gives them. A batch without an
image-to-video item passes one timestep per item (the same values: every token would get
its item's t), which spares the per-token modulations, (B, seq_len, 6, dim) in float32
(2 GiB at 121 frames of 704p). Tokens follow the
DiT's (1, 2, 2) patch grid, frame-major (models/time_embedding.py, pinned to the official
code's outputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..models.precision import autocast
from ..models.text_encoder import TEXT_LEN, pad_context
from ..models.time_embedding import ti2v_token_timesteps
from ..recipes.schema import ExpertSettings, RecipeConfig
from .timesteps import dit_timestep, noise_and_timesteps, noisy_and_target

Samples = list[tuple[torch.Tensor, torch.Tensor]]  # per item: (latent, text embedding)


class Ti2vInputs(NamedTuple):
    """A TI2V micro-batch on the device (a tuple of tensors: a CUDA graph copies them)."""

    noisy: torch.Tensor  # (B, 48, F, H, W); latent frame 0 clean for image-to-video items
    timestep: torch.Tensor  # (B, seq_len) per-token DiT timesteps; (B,) with no i2v item
    context: torch.Tensor  # (B, 512, D) padded text embeddings, float32
    target: torch.Tensor  # (B, 48, F, H, W) velocity target, noise - latents
    frame_weights: torch.Tensor  # (B, 1, F, 1, 1): 1 where the loss counts, 0 where not


def draws(
    samples: Samples,
    batch: list[int],
    config: RecipeConfig,
    settings: ExpertSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A micro-batch's random draws, in order: noise, timesteps, then one uniform per item
    that decides image-to-video (below the share). Always the same number of draws per
    batch, whatever the items are, so every rank's stream stays in step."""
    shape = (len(batch), *samples[batch[0]][0].shape)
    noise, t = noise_and_timesteps(
        shape, config.timesteps, settings.min_timestep, settings.max_timestep, generator
    )
    coins = torch.rand((len(batch),), generator=generator)
    return noise, t, coins


def image_to_video_items(coins: torch.Tensor, latent_frames: int, share: float) -> torch.Tensor:
    """(B,) bool: which items train image-to-video. A 1-frame item (an image) never does."""
    if latent_frames < 2:
        return torch.zeros_like(coins, dtype=torch.bool)
    return coins < share


def uses_per_token_timesteps(config: RecipeConfig, latent_frames: int) -> bool:
    """Whether a batch of `latent_frames` may pass per-token timesteps (an image-to-video
    item): TI2V-5B clips of 2+ latent frames with a nonzero image-to-video share."""
    return config.task == "ti2v-5B" and latent_frames >= 2 and config.training.ti2v_i2v_share > 0


def token_timesteps(
    timestep: torch.Tensor, clean_first: torch.Tensor, latent_shape: tuple[int, int, int]
) -> torch.Tensor:
    """(B,) DiT timesteps -> (B, seq_len): every token its item's timestep, except the
    tokens of latent frame 0 of the `clean_first` items, which get 0."""
    frames, height, width = latent_shape
    every = ti2v_token_timesteps(timestep, frames, height, width, clean_first_frame=False)
    first_clean = ti2v_token_timesteps(timestep, frames, height, width, clean_first_frame=True)
    return torch.where(clean_first[:, None], first_clean, every)


def frame_weights(clean_first: torch.Tensor, latent_frames: int, mask_first: bool) -> torch.Tensor:
    """(B, 1, F, 1, 1) loss weights: 0 on latent frame 0 of image-to-video items (when
    masking), 1 everywhere else."""
    weights = torch.ones((clean_first.numel(), 1, latent_frames, 1, 1))
    if mask_first:
        weights[clean_first, :, 0] = 0.0
    return weights


def model_inputs(
    samples: Samples,
    batch: list[int],
    config: RecipeConfig,
    settings: ExpertSettings,
    generator: torch.Generator,
    device: torch.device,
    rows: int = TEXT_LEN,
) -> Ti2vInputs:
    """A micro-batch's DiT inputs: text-to-video and image-to-video items side by side
    (text zero-padded to `rows`, as step.model_inputs)."""
    latents = torch.stack([samples[i][0] for i in batch]).float()
    context = torch.stack([pad_context(samples[i][1], rows) for i in batch]).float()
    noise, t, coins = draws(samples, batch, config, settings, generator)
    frames, height, width = latents.shape[2:]
    clean = image_to_video_items(coins, frames, config.training.ti2v_i2v_share)
    noisy, target = noisy_and_target(latents, noise, t)
    noisy[clean, :, 0] = latents[clean, :, 0]  # the image's latent, as inference holds it
    timestep = dit_timestep(t)
    if clean.any():  # per token only when needed: (B, seq, 6, dim) modulations cost memory
        timestep = token_timesteps(timestep, clean, (frames, height, width))
    weights = frame_weights(clean, frames, config.training.ti2v_mask_first_frame)
    return Ti2vInputs(*(x.to(device) for x in (noisy, timestep, context, target, weights)))


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The mean squared error over the elements whose weight is 1, in float32."""
    squared = (prediction.float() - target.float()).square()
    weights = weights.expand_as(squared)
    return (squared * weights).sum() / weights.sum()


def prediction_loss(
    model, noisy, timestep, context, target, weights, dtype, cache_enabled=True
) -> torch.Tensor:
    """The DiT's velocity prediction with per-token timesteps, and its masked MSE loss."""
    with autocast(noisy.device, dtype, cache_enabled=cache_enabled):
        prediction = model(
            hidden_states=noisy.to(dtype),
            timestep=timestep,
            encoder_hidden_states=context,
            return_dict=False,
        )[0]
    return masked_mse(prediction, target, weights)
