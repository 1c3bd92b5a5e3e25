"""The training recipe, top to bottom: one expert's LoRA from cached latents and text.

    data -> DiT (+ fp8 rounding) -> LoRA -> AdamW + schedule -> steps -> LoRA file

Each step is the reference trainer's (TRAINER_SPEC.md): noise ~ N(0, 1); t from the recipe's
timestep distribution restricted to the expert's range; noisy = (1-t) x + t noise; the DiT
sees timestep 1000 t + 1 and the caption embedding zero-padded to 512 rows; loss = MSE
against noise - x in float32; fp16 steps go through a gradient scaler; no clipping at
max_grad_norm 0; the lr follows the polynomial schedule as transformers computes it.

Who calls whom. The run layer (wanlora.run) decides where the run starts (state.start_point),
prepares the data (items, cache, tensors: data.TrainingData), picks the parallel strategy
and the callbacks, then calls `train_expert`, which reads like a torchtune recipe:

    set up      setup.py: model + LoRA (with its speed plan), optimiser, loss scale, the
                resume state, the CUDA graph; schedule.py: the lr schedule
    epochs      step.py: one micro-batch and one optimiser step (the maths above);
                strategy.py: whose micro-batch it is, gradients reduced at a step;
                callbacks.py: step reports and epoch ends, to whoever listens
    save        checkpoint.py: resume states along the way, the LoRA file at the end

The loop imports neither sampling nor the run layer, and never asks how many processes run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import faults
from ..dataset.order import epoch_batches
from ..lora.file import lora_metadata
from ..outputs import lora_path
from ..recipes import Project
from .callbacks import EpochCallback, ExpertResult, StepCallback, StepReport, StopTraining
from .checkpoint import Checkpointer
from .data import TrainingData
from .failures import check_finite, completed, out_of_memory
from .schedule import make_scheduler
from .setup import (
    graphed_step,
    load_expert_model,
    make_grad_scaler,
    make_optimizer,
    start_state,
)
from .state import TrainingParts, recipe_hash
from .step import Stepper
from .strategy import ParallelStrategy, SingleProcess


def train_expert(
    project: Project,
    expert: str,
    data: TrainingData,
    *,
    device: torch.device,
    resume_from: Path | None = None,
    strategy: ParallelStrategy | None = None,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> ExpertResult:
    """Train one expert's LoRA on `data`; resume from the state folder `resume_from`."""
    strategy = strategy or SingleProcess()
    config = strategy.effective_config(project.config)  # N ranks: N x the accumulation
    training, batch_size = config.training, config.dataset.batch_size
    total_steps = data.total_steps(config)

    # --- set up: model + LoRA, optimiser, schedule, loss scale, random stream, state --------
    torch.manual_seed(training.seed)  # the LoRA's initial weights
    model, dtype = load_expert_model(project, expert, config, device)
    optimizer = make_optimizer(model, config.optimizer, device)
    scheduler = make_scheduler(optimizer, config.scheduler, total_steps)
    scaler = make_grad_scaler(device, dtype)
    # noise and timesteps come from their own stream: the same on any device
    generator = torch.Generator("cpu").manual_seed(training.seed)
    parts = TrainingParts(model, optimizer, scheduler, scaler, generator)
    r_hash = recipe_hash(config, expert)
    state = start_state(resume_from, parts, data.dataset_hash, r_hash, expert, total_steps)
    graphed = graphed_step(parts, config, device, dtype, ranks=strategy.world, expert=expert)
    stepper = Stepper(parts, data.samples, config, expert, device, dtype, graphed)
    alpha = config.lora.network_alpha
    checkpoints = Checkpointer(
        project.output_dir, expert, parts, alpha=alpha, writes=strategy.writes_files
    )
    if resume_from is None:
        checkpoints.clear()
    started = time.time()

    # --- the epochs ------------------------------------------------------------------------
    last_loss: float | None = None
    step_start: float | None = None
    try:
        for epoch in range(state.epoch, training.max_train_epochs):
            batches = epoch_batches(data.items, batch_size, epoch, training.seed)
            for b in range(state.batch_in_epoch if epoch == state.epoch else 0, len(batches)):
                if step_start is None:  # a step's time covers all its micro-batches
                    step_start = time.perf_counter()
                lr = float(scheduler.get_last_lr()[0])  # a tensor with CUDA graphs
                last = b + 1 == len(batches)
                stepped = last or (b + 1) % training.gradient_accumulation_steps == 0
                loss = stepper.micro_batch(batches[b], owned=strategy.owns(b))
                faults.point("micro_batch", expert)  # test hooks (faults.py): inert unless asked
                loss = strategy.reduce(loss, stepped, stepper.params)  # at a step: summed
                check_finite(loss, expert, state.step + 1)  # before the optimiser step
                last_loss = loss if loss is not None else last_loss
                if stepped:
                    stepper.optimizer_step()
                    scheduler.step()
                    state.step += 1
                    faults.point("step", expert)
                state.epoch, state.batch_in_epoch = (epoch + 1, 0) if last else (epoch, b + 1)
                if not stepped:
                    continue
                if state.step % training.save_state_every_n_steps == 0 and state.step < total_steps:
                    checkpoints.save(state, finished=False)
                if on_step is not None:
                    seconds = time.perf_counter() - step_start
                    on_step(StepReport(expert, state.step, total_steps, loss, lr, seconds))
                step_start = None
            if on_epoch_end is not None and state.epoch == epoch + 1:
                faults.point("epoch_end", expert)
                on_epoch_end(expert, state.epoch, model)
    except StopTraining:  # raised at a step or an epoch end: the state there is whole
        checkpoints.save(state, finished=False)
        raise
    except torch.OutOfMemoryError as exc:
        raise out_of_memory(expert, f"after {completed(state.step)}", exc) from None

    # --- save: the LoRA in the DiT's dtype, with the reference's metadata -------------------
    metadata = lora_metadata(
        config,
        expert,
        total_steps=total_steps,
        steps_done=state.step,
        epochs_done=state.epoch,
        num_images=len(data.items),
        dataset_hash=data.dataset_hash,
        started_at=started,
    )
    out_path = lora_path(project, expert)
    checkpoints.finish(state, out_path, dtype, metadata)
    return ExpertResult(expert, out_path, state.step, last_loss)
