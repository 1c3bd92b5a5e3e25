"""One training step, in named parts: the draws, the model inputs, the loss, the updates.

    draws          noise ~ N(0, 1), then t from the expert's timestep range (that order)
    model_inputs   noisy = (1 - t) x + t noise, target = noise - x, text padded to 512 rows
                   (or folded to fewer: speed/text_fold.py, same maths)
    i2v_model_inputs  I2V-A14B: those, the first-frame conditioning after the noisy latent
    velocity_prediction  the DiT's prediction under autocast (validation.py calls it too)
    prediction_loss  that prediction's MSE against the target in float32
    training_step  forward + scaled backward of one micro-batch (1/accumulation)
    optimizer_step unscale + clip (if max_grad_norm > 0), scaler step, zero the gradients
    Stepper        the loop's one object for these: a micro-batch (trained, replayed from a
                   CUDA graph, or only its draws taken when another rank trains it) and the
                   optimiser step

Keep "the inputs" and "the loss" apart: image-to-video conditioning (extra latent channels)
and per-token timesteps change the inputs; a loss mask changes the loss. A task with its own
inputs and loss (TI2V-5B: ti2v.py) supplies its own draws / model_inputs / prediction_loss
with the same call shapes; `step_functions` picks them (I2V-A14B: i2v_model_inputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..lora.inject import lora_parameters
from ..models.precision import autocast
from ..models.text_encoder import TEXT_LEN, pad_context
from ..recipes.schema import ExpertSettings, RecipeConfig
from . import ti2v
from .i2v_inputs import with_conditioning
from .speed.cuda_graph import GraphedStep
from .speed.text_fold import text_rows
from .state import TrainingParts
from .timesteps import dit_timestep, noise_and_timesteps, noisy_and_target

# per item: (latent, text embedding), and for I2V its conditioning (mask + y, i2v_inputs.py)
Samples = list[tuple[torch.Tensor, ...]]


class StepInputs(NamedTuple):
    """A micro-batch's tensors on the device (a tuple: a CUDA graph copies them in order)."""

    noisy: torch.Tensor  # (B, C_in, F, H, W) the DiT's input: noisy latents (+ I2V conditioning)
    t: torch.Tensor  # (B,) in [0, 1]
    context: torch.Tensor  # (B, rows, D) padded text embeddings, float32 (rows: text_rows)
    target: torch.Tensor  # (B, C, F, H, W) velocity target, noise - latents


def draws(
    samples: Samples,
    batch: list[int],
    config: RecipeConfig,
    settings: ExpertSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch's random draws, in order: noise, then timesteps. Every draw from the
    generator goes through here: data-parallel ranks replay the draws of the other ranks'
    batches with it, so that each batch gets the noise it gets in one process."""
    shape = (len(batch), *samples[batch[0]][0].shape)
    noise, t = noise_and_timesteps(
        shape, config.timesteps, settings.min_timestep, settings.max_timestep, generator
    )
    return noise, t


def model_inputs(
    samples: Samples,
    batch: list[int],
    config: RecipeConfig,
    settings: ExpertSettings,
    generator: torch.Generator,
    device: torch.device,
    rows: int = TEXT_LEN,
) -> StepInputs:
    """A micro-batch's DiT inputs on the device: noisy latents, t, text zero-padded to
    `rows` (512, or fewer for a model that folds the padding: `text_rows`), target."""
    latents = torch.stack([samples[i][0] for i in batch]).float()
    context = torch.stack([pad_context(samples[i][1], rows) for i in batch]).float()
    noise, t = draws(samples, batch, config, settings, generator)
    noisy, target = noisy_and_target(latents, noise, t)
    return StepInputs(noisy.to(device), t.to(device), context.to(device), target.to(device))


def i2v_model_inputs(
    samples: Samples,
    batch: list[int],
    config: RecipeConfig,
    settings: ExpertSettings,
    generator: torch.Generator,
    device: torch.device,
    rows: int = TEXT_LEN,
) -> StepInputs:
    """I2V-A14B: `model_inputs` (the same draws) with each item's conditioning (mask + y)
    after its noisy latent, 16 -> 36 channels (i2v_inputs.py); the target stays 16."""
    inputs = model_inputs(samples, batch, config, settings, generator, device, rows)
    return inputs._replace(noisy=with_conditioning(inputs.noisy, [samples[i] for i in batch]))


def velocity_prediction(model, noisy, t, context, dtype, cache_enabled=True) -> torch.Tensor:
    """The DiT's velocity prediction for the noisy latents (in the compute dtype)."""
    with autocast(noisy.device, dtype, cache_enabled=cache_enabled):
        # the context goes in as float32 so the time embedding (run in float32) keeps its
        # dtype; the text projection's linears still run in the compute dtype under autocast
        return model(
            hidden_states=noisy.to(dtype),
            timestep=dit_timestep(t),
            encoder_hidden_states=context,
            return_dict=False,
        )[0]


def prediction_loss(model, noisy, t, context, target, dtype, cache_enabled=True) -> torch.Tensor:
    """The DiT's velocity prediction for the noisy latents, and its MSE loss in float32."""
    prediction = velocity_prediction(model, noisy, t, context, dtype, cache_enabled)
    return F.mse_loss(prediction.float(), target.float())


def step_functions(config: RecipeConfig):
    """(draws, model_inputs, prediction_loss) for the recipe's task: TI2V-5B's own (per-token
    timesteps, the loss mask: ti2v.py), I2V-A14B's inputs with the first-frame conditioning,
    else the ones above."""
    if config.task == "ti2v-5B":
        return ti2v.draws, ti2v.model_inputs, ti2v.prediction_loss
    if config.dit_task == "i2v":
        return draws, i2v_model_inputs, prediction_loss
    return draws, model_inputs, prediction_loss


def training_step(
    model, samples, batch, config, settings, generator, device, dtype, scaler
) -> float:
    """Forward + backward for one micro-batch; returns the loss value."""
    _draws, inputs_for, loss_for = step_functions(config)
    rows = text_rows(model, [samples[i][1].shape[0] for i in batch])
    inputs = inputs_for(samples, batch, config, settings, generator, device, rows)
    loss = loss_for(model, *inputs, dtype)
    scaled = scaler.scale(loss / config.training.gradient_accumulation_steps)
    scaled.backward()
    return loss.item()


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: list[torch.nn.Parameter],
    max_grad_norm: float,
) -> None:
    """The accumulated gradients into the LoRA: no clipping at max_grad_norm 0 (the recipe)."""
    if max_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


class Stepper:
    """The loop's micro-batches and optimiser steps, plain or replayed from a CUDA graph."""

    def __init__(
        self,
        parts: TrainingParts,
        samples: Samples,
        config: RecipeConfig,
        expert: str,
        device: torch.device,
        dtype: torch.dtype,
        graphed: GraphedStep | None = None,
    ):
        self.model, self.optimizer = parts.model, parts.optimizer
        self.scaler, self.generator = parts.scaler, parts.generator
        self.samples, self.config, self.settings = samples, config, config.experts[expert]
        self.device, self.dtype = device, dtype
        self.graphed = graphed  # the whole step (optimiser and loss scale included)
        self.params = lora_parameters(self.model)
        self.draws, self.model_inputs, _loss = step_functions(config)

    def micro_batch(self, batch: list[int], owned: bool = True) -> float | None:
        """Train on `batch` (accumulating gradients) and return its loss; not `owned`:
        another rank trains it, take its draws off the generator and return None."""
        args = (self.samples, batch, self.config, self.settings, self.generator)
        if self.graphed is not None:
            rows = text_rows(self.model, [self.samples[i][1].shape[0] for i in batch])
            return self.graphed(*self.model_inputs(*args, self.device, rows)).item()
        if owned:
            return training_step(self.model, *args, self.device, self.dtype, self.scaler)
        self.draws(*args)
        return None

    def optimizer_step(self) -> None:
        if self.graphed is None:  # a graph has stepped the optimiser already
            optimizer_step(
                self.optimizer, self.scaler, self.params, self.config.optimizer.max_grad_norm
            )
