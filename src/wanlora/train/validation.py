"""Validation: a fixed flow-matching loss per expert, and how far its LoRA moves the model.

One ValidationSet per expert, fixed for the whole run (and the same again after a resume):

    items      every training item, or the items `[validation] items` holds out of training;
               at most `max_items` (32) of them, spread evenly over the dataset order
    timesteps  N integers (0..1000) spread over the expert's range [min_timestep,
               max_timestep]: the midpoints of N equal slices (high 875-1000, N = 4:
               891 922 953 984)
    pairs      item k mod n at timestep k mod N for k < max(n, N): every item once (or
               more when n < N) and every timestep: max(n, N) forwards a point (the
               recipe's 18 items at 4 timesteps: 18 forwards, about 6 steps' time, as a
               forward without grad is about a third of a training step)
    noise      one N(0, 1) draw per pair, in pair order, from the set's own generator
               (`[validation] seed`, default the training seed): never the training stream
    TI2V-5B    trains text-to-video and image-to-video in one model (ti2v.py); its set
               holds both: a clip's pair is image-to-video at the `[training]
               ti2v_i2v_share` of the pairs, spread evenly (share 0.5: every second pair),
               with latent frame 0 clean, its tokens at timestep 0 and, with
               ti2v_mask_first_frame, left out of the loss and the effect (inference puts
               the image's latent back there); an image (one latent frame) never is

A point (Validator.point) runs each pair through the model exactly as a training step does
(as step.velocity_prediction: noisy = (1 - t) x + t noise, the DiT sees 1000 t + 1, text
padded to 512 rows) and gives

    loss    the mean over pairs of each pair's MSE against noise - x, in float32
    effect  ||f_lora - f_base|| / ||f_base|| over every element of every pair's prediction
            (but the masked first frames of TI2V's image-to-video pairs)

f_base is the same model with every LoRA at scale 0 (lora.inject.lora_scaled): no second
model. Its predictions are computed once per process and kept on the CPU; its loss is the
run's step-0 point, the base model (at step 0 a fresh LoRA is the base model: B = 0).

A point changes nothing training uses: no grad, eval mode (no dropout draws from torch's
global stream), the set's own generator, each LoRA's scaling restored as it was, the
model's train/eval mode restored. Training with validation on gives the LoRA bytes it gives
with validation off (tests/test_validation.py). One pair at a time without activations for
backward: its memory stays below the training step's peak (a held-out item in a bucket
larger than every training item's is the exception).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..lora.inject import lora_scaled
from ..models.precision import autocast
from ..models.text_encoder import pad_context
from ..recipes.schema import ExpertSettings
from .i2v_inputs import with_conditioning
from .step import Samples
from .ti2v import frame_weights, token_timesteps
from .timesteps import dit_timestep, noisy_and_target


def validation_timesteps(min_timestep: int, max_timestep: int, count: int) -> list[int]:
    """`count` timesteps (0..1000) at the midpoints of equal slices of the range."""
    width = (max_timestep - min_timestep) / count
    return [round(min_timestep + (k + 0.5) * width) for k in range(count)]


@dataclass(frozen=True)
class ValidationSet:
    samples: Samples  # per item: (latent, text embedding[, I2V conditioning]), as training
    timesteps: list[int]  # 0..1000; t = timestep / 1000
    pairs: list[tuple[int, int]]  # (item index, timestep index), in evaluation order
    noise: list[torch.Tensor]  # per pair, (1, C, F, H, W) float32 on the CPU
    clean_first: list[bool] = field(default_factory=list)  # per pair: TI2V image-to-video
    mask_first: bool = True  # TI2V: the clean first frame out of the loss and the effect

    def image_to_video(self, k: int) -> bool:
        return bool(self.clean_first) and self.clean_first[k]

    @property
    def items(self) -> int:
        return len(self.samples)


def spread(count: int, most: int) -> list[int]:
    """At most `most` of `count` indices, evenly spread: 0, count/most, 2 count/most, ..."""
    chosen = min(count, most)
    return [k * count // chosen for k in range(chosen)]


def spread_share(count: int, share: float) -> list[bool]:
    """`count` flags, `share` of them True, evenly spread (0.5: F T F T ...)."""
    return [math.floor((k + 1) * share) > math.floor(k * share) for k in range(count)]


def build_validation_set(
    samples: Samples,
    settings: ExpertSettings,
    timesteps: int,
    seed: int,
    max_items: int = 32,
    *,
    i2v_share: float = 0.0,
    mask_first: bool = True,
) -> ValidationSet:
    """The fixed set for one expert: at most `max_items` of `samples`, `timesteps` over its
    range, noise from `seed`; `i2v_share` > 0 (TI2V-5B): that share of the pairs of clips
    image-to-video."""
    if not samples:
        raise ValueError("a validation set needs at least one item")
    samples = [samples[i] for i in spread(len(samples), max_items)]
    steps = validation_timesteps(settings.min_timestep, settings.max_timestep, timesteps)
    n = len(samples)
    pairs = [(k % n, k % len(steps)) for k in range(max(n, len(steps)))]
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = [torch.randn((1, *samples[i][0].shape), generator=generator) for i, _ in pairs]
    clean = [
        flag and samples[i][0].shape[1] > 1  # an image (one latent frame) never
        for flag, (i, _) in zip(spread_share(len(pairs), i2v_share), pairs, strict=True)
    ]
    return ValidationSet(samples, steps, pairs, noise, clean if any(clean) else [], mask_first)


@dataclass(frozen=True)
class ValidationPoint:
    loss: float
    effect: float  # 0.0 for the base model


class Validator:
    """Points of one expert's validation set: the base model's once, the LoRA's on request."""

    def __init__(self, vset: ValidationSet, device: torch.device, dtype: torch.dtype):
        self.vset, self.device, self.dtype = vset, torch.device(device), dtype
        self._base: list[torch.Tensor] | None = None  # base predictions, CPU float32
        self._base_loss: float | None = None

    def inputs(self, k: int) -> tuple[torch.Tensor, ...]:
        """Pair k's (noisy, DiT timestep, context, target, loss weights) on the CPU, as a
        training step builds them."""
        item, step = self.vset.pairs[k]
        sample = self.vset.samples[item]
        latent, text = sample[0].float().unsqueeze(0), sample[1]
        t = torch.tensor([self.vset.timesteps[step] / 1000.0], dtype=torch.float32)
        noisy, target = noisy_and_target(latent, self.vset.noise[k], t)
        noisy = with_conditioning(noisy, [sample])  # I2V: + the first-frame conditioning
        timestep = dit_timestep(t)
        clean = torch.tensor([self.vset.image_to_video(k)])
        if clean.item():  # TI2V image-to-video: frame 0 is the image's latent, at timestep 0
            noisy[:, :, 0] = latent[:, :, 0]
            timestep = token_timesteps(timestep, clean, tuple(latent.shape[2:]))
        weights = frame_weights(clean, latent.shape[2], self.vset.mask_first)
        return noisy, timestep, pad_context(text).float().unsqueeze(0), target, weights

    def base_point(self, model: torch.nn.Module) -> ValidationPoint:
        """The base model (`model` with its LoRA at scale 0): loss, effect 0."""
        self._ensure_base(model)
        return ValidationPoint(self._base_loss, 0.0)

    def point(self, model: torch.nn.Module) -> ValidationPoint:
        """`model` as it is now: its loss and the relative change from the base model."""
        self._ensure_base(model)
        losses, diff, base = [], 0.0, 0.0
        for k, prediction, target, weights in self._predictions(model):
            reference = self._base[k].to(self.device)
            losses.append(masked_mse(prediction, target, weights))
            diff += ((prediction - reference).square() * weights).sum().item()
            base += (reference.square() * weights).sum().item()
        effect = math.sqrt(diff / base) if base > 0 else 0.0
        return ValidationPoint(sum(losses) / len(losses), effect)

    def _ensure_base(self, model: torch.nn.Module) -> None:
        if self._base is not None:
            return
        predictions, losses = [], []
        with lora_scaled(model, 0.0):
            for _k, prediction, target, weights in self._predictions(model):
                losses.append(masked_mse(prediction, target, weights))
                predictions.append(prediction.cpu())
        self._base, self._base_loss = predictions, sum(losses) / len(losses)

    def _predictions(self, model: torch.nn.Module):
        """(k, prediction, target, weights) per pair, float32 on the device; no grad, eval
        mode."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for k in range(len(self.vset.pairs)):
                    noisy, timestep, context, target, weights = (
                        x.to(self.device) for x in self.inputs(k)
                    )
                    # as step.velocity_prediction, with the DiT timestep made above
                    with autocast(noisy.device, self.dtype):
                        prediction = model(
                            hidden_states=noisy.to(self.dtype),
                            timestep=timestep,
                            encoder_hidden_states=context,
                            return_dict=False,
                        )[0]
                    yield k, prediction.float(), target, weights.expand_as(target)
        finally:
            model.train(was_training)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> float:
    """The MSE over the elements of weight 1 (every element but TI2V's masked frame 0)."""
    if bool((weights == 1).all()):  # the plain MSE, bit for bit
        return F.mse_loss(prediction, target).item()
    return ((prediction - target).square() * weights).sum().item() / weights.sum().item()
