"""Timesteps, noisy inputs and targets for flow-matching training (TRAINER_SPEC.md section 5).

Timesteps are t in [0, 1]: t = 0 is the clean latent, t = 1 pure noise. The reference
(musubi-tuner) draws t from a logit-normal, optionally shifted, and keeps each expert to its
own slice of [0, 1] (high noise: 875-1000, low noise: 0-875 out of 1000).
"""

from __future__ import annotations

import logging

import torch

from ..recipes.schema import TimestepSettings

logger = logging.getLogger(__name__)

# The reference gives up redrawing after this many rounds (preserve_distribution_shape).
MAX_REJECTION_ROUNDS = 1000


def timestep_range(min_timestep: int, max_timestep: int) -> tuple[float, float]:
    """An expert's min/max_timestep (0..1000) as t_min, t_max in [0, 1]."""
    return min_timestep / 1000.0, max_timestep / 1000.0


def draw_timesteps(
    batch_size: int,
    settings: TimestepSettings,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One unrestricted draw of `batch_size` timesteps in [0, 1] (float32)."""
    if settings.timestep_sampling == "uniform":
        return torch.rand((batch_size,), generator=generator, device=device)
    z = torch.randn((batch_size,), generator=generator, device=device)
    t = torch.sigmoid(settings.sigmoid_scale * z)
    if settings.timestep_sampling == "shift":
        shift = settings.discrete_flow_shift
        t = (t * shift) / (1 + (shift - 1) * t)
    return t


def sample_timesteps(
    batch_size: int,
    settings: TimestepSettings,
    min_timestep: int,
    max_timestep: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Timesteps t in [t_min, t_max] for one batch: float32, shape (batch_size,).

    With preserve_distribution_shape the draw is repeated until enough samples fall inside
    the range (rejection sampling: the distribution truncated to the range). Like the
    reference, each round draws a whole batch and accepted samples are taken in order.
    If the range is so narrow that 1000 rounds do not fill the batch, the missing samples
    are drawn once more and clamped into the range (a warning is logged); the reference
    also gives up there, and clamping keeps every t inside the expert's range.
    Without preserve_distribution_shape, t is squeezed linearly into the range.
    """
    t_min, t_max = timestep_range(min_timestep, max_timestep)
    if t_min <= 0.0 and t_max >= 1.0:  # the full range: nothing to restrict
        return draw_timesteps(batch_size, settings, generator, device)

    if not settings.preserve_distribution_shape:
        t = draw_timesteps(batch_size, settings, generator, device)
        return t * (t_max - t_min) + t_min

    accepted: list[torch.Tensor] = []
    n_accepted = 0
    for _ in range(MAX_REJECTION_ROUNDS):
        t = draw_timesteps(batch_size, settings, generator, device)
        in_range = t[(t >= t_min) & (t <= t_max)][: batch_size - n_accepted]
        accepted.append(in_range)
        n_accepted += in_range.numel()
        if n_accepted == batch_size:
            return torch.cat(accepted)
    missing = batch_size - n_accepted
    logger.warning(
        "timestep range %d-%d: %d of %d samples still out of range after %d rounds; clamping them",
        min_timestep,
        max_timestep,
        missing,
        batch_size,
        MAX_REJECTION_ROUNDS,
    )
    fallback = draw_timesteps(missing, settings, generator, device).clamp(t_min, t_max)
    return torch.cat([*accepted, fallback])


def noise_and_timesteps(
    shape: tuple[int, ...],
    timesteps: TimestepSettings,
    min_timestep: int,
    max_timestep: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch's noise of `shape` (batch first), then its timesteps: the recipe's draw
    order, which every task's step keeps so the generator's stream stays the same."""
    noise = torch.randn(shape, generator=generator)
    t = sample_timesteps(shape[0], timesteps, min_timestep, max_timestep, generator=generator)
    return noise, t


def dit_timestep(t: torch.Tensor) -> torch.Tensor:
    """The timestep the DiT receives for t: 1000 * t + 1.

    The +1 is the reference's (measured): it shifts the 0..1000 range to 1..1001.
    """
    return t * 1000.0 + 1.0


def noisy_and_target(
    latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow matching: noisy = (1 - t) * latents + t * noise; target velocity = noise - latents.

    `t` has shape (B,) and is broadcast over the other dims of latents, e.g. (B, C, F, H, W).
    """
    t = t.view(-1, *([1] * (latents.dim() - 1)))
    noisy = (1 - t) * latents + t * noise
    target = noise - latents
    return noisy, target


# The quantiles `wanlora inspect timesteps` reports.
SUMMARY_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def summarize_timesteps(t: torch.Tensor) -> dict[str, object]:
    """Quantiles (keyed "0.01".."0.99") and mean of sampled timesteps, as plain floats."""
    t = t.double()
    levels = torch.tensor(SUMMARY_QUANTILES, dtype=torch.float64)
    values = torch.quantile(t, levels).tolist()
    return {
        "quantiles": {str(q): round(v, 6) for q, v in zip(SUMMARY_QUANTILES, values, strict=True)},
        "mean": round(float(t.mean()), 6),
    }
