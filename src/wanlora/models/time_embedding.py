"""The Wan time embedding as the reference computes it, scalar or per token.

diffusers' WanTransformer3DModel embeds timesteps in float32 and casts the embedding to the
text dtype before the 6-way projection; the reference (original Wan code) computes the
sinusoid in float64 and the MLP and projection in float32 with autocast off. The two
modules here put the reference's arithmetic into diffusers' model (load_dit installs them).

Per-token timesteps (new in Wan 2.2, used by TI2V-5B): diffusers 0.42's forward already
takes a timestep of shape (B, seq_len) -- one t per latent token, in the token order of the
patch grid (frame, row, column) -- and then modulates every token with its own embedding.
Float32TimeConditionEmbedder keeps that path (`timestep_seq_len`). `ti2v_token_timesteps`
builds the reference's TI2V image-to-video timesteps: t on every token, 0 on the tokens of
latent frame 0 (the clean image latent).
"""

from __future__ import annotations

import torch
from torch import nn


class Float64TimestepProjection(nn.Module):
    """Sinusoidal timestep embedding computed in float64, returned as float32.

    The reference (original Wan code) embeds timesteps in float64; diffusers' `Timesteps`
    does it in float32, which differs by up to ~1e-4 at t ~ 1000. Same layout as diffusers
    with flip_sin_to_cos=True: [cos(t * f_i), sin(t * f_i)], f_i = 10000^(-i / half).
    """

    def __init__(self, num_channels: int):
        super().__init__()
        if num_channels % 2:
            raise ValueError(f"num_channels must be even, got {num_channels}")
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        position = timesteps.to(torch.float64)
        exponents = torch.arange(half, dtype=torch.float64, device=position.device).div(half)
        angles = torch.outer(position, torch.pow(10000.0, -exponents))
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(torch.float32)


class Float32TimeConditionEmbedder(nn.Module):
    """diffusers' Wan condition embedder with the reference's float32 time path.

    The reference computes the time embedding and its 6-way projection in float32 with
    autocast off, whatever the other weights' dtype; diffusers casts the embedding to the
    text dtype before the projection. Text (and image) embedding are unchanged. Holds the
    very same submodules, so parameter names stay `condition_embedder.time_embedder...`;
    load_dit stores those weights in float32.
    """

    def __init__(self, embedder: nn.Module, freq_dim: int):
        super().__init__()
        self.timesteps_proj = Float64TimestepProjection(freq_dim)
        self.time_embedder = embedder.time_embedder
        self.act_fn = embedder.act_fn
        self.time_proj = embedder.time_proj
        self.text_embedder = embedder.text_embedder
        self.image_embedder = embedder.image_embedder

    def forward(
        self,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        timestep_seq_len: int | None = None,
    ):
        timestep = self.timesteps_proj(timestep)  # float32
        if timestep_seq_len is not None:
            timestep = timestep.unflatten(0, (-1, timestep_seq_len))
        with torch.autocast(device_type=timestep.device.type, enabled=False):
            temb = self.time_embedder(timestep)
            timestep_proj = self.time_proj(self.act_fn(temb))
        encoder_hidden_states = self.text_embedder(encoder_hidden_states)
        if encoder_hidden_states_image is not None:
            encoder_hidden_states_image = self.image_embedder(encoder_hidden_states_image)
        return temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image


def ti2v_token_timesteps(
    timesteps: torch.Tensor,
    latent_frames: int,
    latent_height: int,
    latent_width: int,
    clean_first_frame: bool = True,
) -> torch.Tensor:
    """(B,) timesteps -> (B, seq_len) per-token timesteps for the TI2V-5B DiT.

    Tokens follow the DiT's (1, 2, 2) patch grid: latent_frames x latent_height/2 x
    latent_width/2, frame-major. Every token gets its sample's t; with `clean_first_frame`
    the tokens of latent frame 0 get 0, as the reference's image-to-video path does
    (W wan/textimage2video.py:571-578: `mask[:, ::2, ::2] * t`). Without it the result
    equals passing the (B,) timesteps themselves.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape (B,), got {tuple(timesteps.shape)}")
    if latent_height % 2 or latent_width % 2:
        raise ValueError(f"latent size must be even, got {latent_width}x{latent_height}")
    per_frame = (latent_height // 2) * (latent_width // 2)
    tokens = timesteps[:, None].expand(-1, latent_frames * per_frame).clone()
    if clean_first_frame:
        tokens[:, :per_frame] = 0
    return tokens
