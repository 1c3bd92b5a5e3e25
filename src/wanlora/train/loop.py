"""The training recipe, top to bottom: one expert's LoRA from cached latents and text.

    items -> cache -> DiT (+ fp8 rounding) -> LoRA -> AdamW + schedule -> steps -> LoRA file

Each step is the reference trainer's (TRAINER_SPEC.md): noise ~ N(0, 1); t from the recipe's
timestep distribution restricted to the expert's range; noisy = (1-t) x + t noise; the DiT
sees timestep 1000 t + 1 and the caption embedding zero-padded to 512 rows; loss = MSE
against noise - x in float32; fp16 steps go through a gradient scaler; no clipping at
max_grad_norm 0; the lr follows the polynomial schedule as transformers computes it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .. import faults
from ..cache.build import build_cache, default_device, load_cached_tensors
from ..dataset.items import DatasetItem, load_items
from ..dataset.order import epoch_batches, steps_per_epoch
from ..device_memory import free_device_memory, out_of_memory_detail
from ..errors import WanloraError
from ..models.registry import resolve_model_path
from ..recipes import Project
from .acceleration import (
    DitShape,
    GiB,
    min_budget_bytes,
    plan_speed,
    prepare_base,
    prepare_for_speed,
    tokens_for_resolution,
)
from .cuda_graph import GraphedStep, set_capturable, why_not_graphed
from .lora import add_lora, load_lora_state_dict, lora_parameters, lora_state_dict
from .lora_file import lora_metadata, save_lora_file
from .precision import autocast, compute_dtype, grad_scaler
from .schedule import make_scheduler
from .state import (
    TrainState,
    clear_states,
    latest_state_dir,
    load_state,
    read_state_meta,
    recipe_hash,
    save_state,
)
from .timesteps import dit_timestep, noisy_and_target, sample_timesteps

if TYPE_CHECKING:
    from .distributed import DataParallel

log = logging.getLogger(__name__)

TEXT_LEN = 512  # the DiT's text length: every context is zero-padded to this many rows


@dataclass
class StepReport:
    expert: str
    step: int
    total_steps: int
    loss: float
    lr: float
    seconds: float


@dataclass
class ExpertResult:
    expert: str
    lora_path: Path
    steps: int
    final_loss: float | None
    skipped: bool = False


class StopTraining(Exception):
    """Raised by a step callback to stop after the current step (state is saved first)."""


StepCallback = Callable[[StepReport], None]
# called after each epoch with (expert, epochs_done, model); the model is in train mode and
# carries the LoRA, e.g. for rendering samples (wanlora.sampling)
EpochCallback = Callable[[str, int, torch.nn.Module], None]


def dataset_hash(items: list[DatasetItem], latent_paths: list[Path], text_paths: list[Path]) -> str:
    """Identity of the training data: the cache keys already hash image, bucket and caption."""
    digest = hashlib.sha256()
    for item, lat, txt in zip(items, latent_paths, text_paths, strict=True):
        digest.update(f"{lat.name}|{txt.name}|{item.num_repeats}\n".encode())
    return digest.hexdigest()[:16]


def pad_context(context: torch.Tensor, length: int = TEXT_LEN) -> torch.Tensor:
    """(L, D) -> (length, D), zeros below the real tokens, as the reference's DiT does."""
    padded = context.new_zeros((length, context.shape[1]))
    padded[: min(length, context.shape[0])] = context[:length]
    return padded


def output_path(project: Project, expert: str) -> Path:
    return project.output_dir / f"{project.config.output_name(expert)}.safetensors"


def train_expert(
    project: Project,
    expert: str,
    *,
    device: torch.device | None = None,
    overwrite: bool = False,
    restart: bool = False,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
    log_dir: Path | None = None,
    data_parallel: DataParallel | None = None,
) -> ExpertResult:
    """Train one expert's LoRA; resume from output/state/<expert>/ when a state is there."""
    config = project.config
    dp = data_parallel  # this rank's share of a data-parallel run (distributed.py)
    if dp is not None:  # N ranks compute the one-process run with N x the accumulation
        config = dp.effective_config(config)
    is_main = dp is None or dp.rank == 0  # rank 0 alone writes files
    settings = config.experts[expert]
    device = device or default_device()
    out_path = output_path(project, expert)
    seed = config.training.seed

    # --- 1. resume or fresh start: decide before any heavy work -------------------------
    state_dir = None if restart else latest_state_dir(project.output_dir, expert)
    if state_dir is not None and read_state_meta(state_dir).finished:
        if out_path.exists() and not overwrite:
            log.info("%s: already trained -> %s", expert, out_path)
            return ExpertResult(
                expert, out_path, read_state_meta(state_dir).step, None, skipped=True
            )
        if overwrite:  # a finished run asked to be redone: start from scratch
            state_dir = None
    if state_dir is None and out_path.exists() and not overwrite:
        raise WanloraError(
            f"{out_path} already exists",
            "pass --overwrite to replace it, or change project.name in wanlora.toml",
        )

    # --- 2. data: items, cache, tensors in memory ----------------------------------------
    torch.manual_seed(seed)
    items = load_items(project)
    cache = build_cache(project, items=items, device=device)
    samples = load_cached_tensors(cache.entries)
    data_hash = dataset_hash(
        items, [e.latent_path for e in cache.entries], [e.text_path for e in cache.entries]
    )
    batch_size = config.dataset.batch_size
    accumulation = config.training.gradient_accumulation_steps
    epochs = config.training.max_train_epochs
    micro_steps_per_epoch = steps_per_epoch(items, batch_size)
    total_steps = math.ceil(epochs * micro_steps_per_epoch / accumulation)

    # --- 3. model: the expert's DiT, fp8-rounded like the reference, plus LoRA -----------
    from ..models import load_dit
    from ..models.dit import infer_dit_info

    dit_path = resolve_model_path(settings.dit, project.models_dir, project.root)
    if not dit_path.exists():
        raise WanloraError(
            f"{dit_path}: DiT file for the {expert} expert not found",
            f"run `wanlora download {project.root}` or set experts.{expert}.dit in wanlora.toml",
        )
    # the header alone: the file's dtype decides the compute dtype before any weight is read
    dtype = compute_dtype(
        config.training.mixed_precision, infer_dit_info(dit_path).file_dtype, dit_path
    )
    # speed (acceleration.py): fp8 storage of the block linears, recompute policy, compiled
    # blocks; the defaults keep the reference's numerics, training.speed = "fast" does not.
    # The memory budget (training.max_vram_gb, else the card's free memory now: the cache
    # step above has freed the VAE and text encoder) picks storage and recompute count.
    shape = DitShape.from_header(dit_path)
    plan = plan_speed(
        config.training,
        device,
        dtype,
        weight_count=shape.weight_count,
        tokens=tokens_for_resolution(config.dataset.resolution) * batch_size,
        shape=shape,
        rank=config.lora.network_dim,
    )
    _check_plan_fits(plan, config.training.max_vram_gb, expert)
    try:
        model, _info = load_dit(
            dit_path, dtype=plan.load_dtype, device=device, fp8_round=config.training.fp8_base
        )
        prepare_base(model, plan)
        add_lora(model, config.lora)
        prepare_for_speed(model, plan, device)
        faults.point("model_load")  # test hook (faults.py): inert unless asked
    except torch.OutOfMemoryError as exc:
        raise _out_of_memory(expert, f"while loading {dit_path.name} on {device}", exc) from None
    model.train()

    # --- 4. optimiser, schedule, loss scaling, RNG ---------------------------------------
    opt = config.optimizer
    optimizer = torch.optim.AdamW(
        lora_parameters(model),
        lr=opt.learning_rate,
        betas=opt.betas,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        # one kernel for all LoRA tensors, and GradScaler then skips its host sync; the same
        # update as the reference's AdamW up to float32 rounding (last bit)
        fused=device.type == "cuda",
    )
    scheduler = make_scheduler(optimizer, config.scheduler, total_steps)
    scaler = grad_scaler(device, dtype)
    generator = torch.Generator("cpu").manual_seed(seed)  # noise + timesteps: same on any device
    r_hash = recipe_hash(config, expert)
    state = TrainState(0, 0, 0, False, data_hash, r_hash)
    if state_dir is not None:
        state, tensors = load_state(state_dir, optimizer, scheduler, scaler, generator)
        _check_resume(state, data_hash, r_hash, state_dir)
        load_lora_state_dict(model, tensors)
        log.info("%s: resuming at step %d/%d from %s", expert, state.step, total_steps, state_dir)
    if dp is not None:  # a rank can reach a step with no batch of its own (an epoch's tail):
        scaler.scale(torch.zeros((), device=device))  # set up the fp16 loss scale now
    # the whole step (forward, backward, optimiser, loss scale) replayed from a CUDA graph
    # when the step allows it (cuda_graph.py): same kernels, no launch overhead
    graphed = None
    not_graphed = why_not_graphed(
        config.training,
        opt.max_grad_norm,
        device,
        len(model.wanlora_checkpointed),
        1 if dp is None else dp.world,
    )
    set_capturable(optimizer, device, on=not_graphed is None)  # after load_state: either way
    if not_graphed is None:
        graphed = GraphedStep(
            lambda *inputs: _prediction_loss(model, *inputs, dtype, cache_enabled=False),
            lora_parameters(model),
            optimizer,
            scaler,
        )
    log.info("%s: CUDA graph %s", expert, "on" if graphed else f"off ({not_graphed})")

    writer = _tensorboard(log_dir or project.output_dir / "logs", expert) if is_main else None
    started = time.time()
    save_every = config.training.save_state_every_n_steps
    last_loss: float | None = None

    def save(finished: bool) -> None:
        if not is_main:
            return
        state.finished = finished
        tensors = lora_state_dict(model, config.lora.network_alpha, torch.float32)
        save_state(
            project.output_dir, expert, state, tensors, optimizer, scheduler, scaler, generator
        )

    if state_dir is None and is_main:  # a fresh start (--restart, --overwrite): old states go
        clear_states(project.output_dir, expert)

    # --- 5. the loop ----------------------------------------------------------------------
    step_start = None
    try:
        for epoch in range(state.epoch, epochs):
            batches = epoch_batches(items, batch_size, epoch, seed)
            start_batch = state.batch_in_epoch if epoch == state.epoch else 0
            for b in range(start_batch, len(batches)):
                if step_start is None:  # a step's time covers all its micro-batches
                    step_start = time.perf_counter()
                lr = float(scheduler.get_last_lr()[0])  # a tensor with CUDA graphs
                stepped = (b + 1) % accumulation == 0 or b + 1 == len(batches)
                batch = batches[b]
                if graphed is not None:  # optimiser step and loss scale included
                    inputs = _step_inputs(samples, batch, config, settings, generator, device)
                    loss = graphed(*inputs).item()
                elif dp is None or dp.owns(b):
                    loss = _training_step(
                        model, samples, batch, config, settings, generator, device, dtype, scaler
                    )
                else:  # another rank trains on this batch: take its draws off the generator
                    _draws(samples, batch, config, settings, generator)
                    loss = None
                if dp is not None:  # at a step: gradients summed, mean loss over the ranks
                    loss = dp.after_micro_batch(loss, stepped, lora_parameters(model))
                if loss is not None and not math.isfinite(loss):  # before the optimiser step
                    raise WanloraError(
                        f"{expert}: the loss became {loss} at step {state.step + 1} (numerical overflow)",
                        "run `wanlora train` again to resume from the last good state; if it repeats, "
                        "lower optimizer.learning_rate or train from a bf16 DiT file with "
                        'training.mixed_precision = "bf16"',
                    )
                last_loss = loss if loss is not None else last_loss
                if stepped:
                    if graphed is None:
                        if opt.max_grad_norm > 0:
                            scaler.unscale_(optimizer)
                            params = lora_parameters(model)
                            torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    state.step += 1
                    faults.point("step")  # test hook (faults.py): inert unless asked
                state.epoch, state.batch_in_epoch = (
                    (epoch + 1, 0) if b + 1 == len(batches) else (epoch, b + 1)
                )
                if not stepped:
                    continue
                if writer is not None:
                    writer.add_scalar("loss", loss, state.step)
                    writer.add_scalar("lr", lr, state.step)
                if state.step % save_every == 0 and state.step < total_steps:
                    save(finished=False)
                if on_step is not None:
                    on_step(
                        StepReport(
                            expert,
                            state.step,
                            total_steps,
                            loss,
                            lr,
                            time.perf_counter() - step_start,
                        )
                    )
                step_start = None
            if on_epoch_end is not None and state.epoch == epoch + 1:
                on_epoch_end(expert, state.epoch, model)
    except StopTraining:
        save(finished=False)
        raise
    except KeyboardInterrupt:
        save(finished=False)
        raise
    except torch.OutOfMemoryError as exc:
        done = f"{state.step} completed step{'' if state.step == 1 else 's'}"
        raise _out_of_memory(expert, f"after {done}", exc) from None
    finally:
        if writer is not None:
            writer.close()

    # --- 6. the LoRA file, in the DiT's dtype, with the reference's metadata ---------------
    tensors = lora_state_dict(model, config.lora.network_alpha, dtype)
    metadata = lora_metadata(
        config,
        expert,
        total_steps=total_steps,
        steps_done=state.step,
        epochs_done=state.epoch,
        num_images=len(items),
        dataset_hash=data_hash,
        started_at=started,
    )
    save(finished=True)  # first: a kill before the LoRA is written resumes to write it
    if is_main:
        save_lora_file(out_path, tensors, metadata)
    return ExpertResult(expert, out_path, state.step, last_loss)


def _out_of_memory(expert: str, when: str, exc: BaseException) -> WanloraError:
    return WanloraError(
        f"{expert}: out of GPU memory {when} ({out_of_memory_detail(exc)})",
        "close other programs that use the GPU (`nvidia-smi` lists them), or pass --max-vram N "
        "(a little under the card's memory) so the plan stores weights in fp8 and recomputes "
        "more blocks; `wanlora doctor` shows the plan; run the same command again to resume",
    )


def _draws(samples, batch, config, settings, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch's random draws, in order: noise, then timesteps. Every draw from the
    generator goes through here: data-parallel ranks replay the draws of the other ranks'
    batches with it, so that each batch gets the noise it gets in one process."""
    shape = (len(batch), *samples[batch[0]][0].shape)
    noise = torch.randn(shape, generator=generator)
    t = sample_timesteps(
        len(batch),
        config.timesteps,
        settings.min_timestep,
        settings.max_timestep,
        generator=generator,
    )
    return noise, t


def _step_inputs(samples, batch, config, settings, generator, device):
    """A micro-batch's DiT inputs on the device: noisy latents, t, padded text, target."""
    latents = torch.stack([samples[i][0] for i in batch]).float()
    context = torch.stack([pad_context(samples[i][1]) for i in batch]).float()
    noise, t = _draws(samples, batch, config, settings, generator)
    noisy, target = noisy_and_target(latents, noise, t)
    return noisy.to(device), t.to(device), context.to(device), target.to(device)


def _prediction_loss(model, noisy, t, context, target, dtype, cache_enabled=True):
    """The DiT's velocity prediction for the noisy latents, and its MSE loss in float32."""
    with autocast(noisy.device, dtype, cache_enabled=cache_enabled):
        # the context goes in as float32 so the time embedding (run in float32) keeps its
        # dtype; the text projection's linears still run in the compute dtype under autocast
        prediction = model(
            hidden_states=noisy.to(dtype),
            timestep=dit_timestep(t),
            encoder_hidden_states=context,
            return_dict=False,
        )[0]
    return F.mse_loss(prediction.float(), target.float())


def _training_step(
    model, samples, batch, config, settings, generator, device, dtype, scaler
) -> float:
    """Forward + backward for one micro-batch; returns the loss value."""
    inputs = _step_inputs(samples, batch, config, settings, generator, device)
    loss = _prediction_loss(model, *inputs, dtype)
    scaled = scaler.scale(loss / config.training.gradient_accumulation_steps)
    scaled.backward()
    return loss.item()


def _check_plan_fits(plan, max_vram_gb: float | None, expert: str) -> None:
    """A budget the smallest plan cannot meet: refuse when the user set it, else warn."""
    if plan.fits or plan.predicted_peak is None:
        return
    need = min_budget_bytes(plan.predicted_peak) / GiB
    what = (
        f"{expert}: the smallest speed plan ({plan.describe()}) does not fit the "
        f"{plan.budget / GiB:.1f} GiB budget; it needs about {need:.1f} GiB"
    )
    if max_vram_gb is not None:
        raise WanloraError(
            what,
            "raise --max-vram / training.max_vram_gb, lower dataset.resolution or batch_size "
            "(block swapping to host memory is not implemented)",
        )
    log.warning("%s (free GPU memory); the run may run out of memory", what)


def _check_resume(state: TrainState, data_hash: str, r_hash: str, state_dir: Path) -> None:
    if state.dataset_hash != data_hash:
        raise WanloraError(
            f"{state_dir}: the dataset changed since this run started (images, captions or buckets)",
            "restore the dataset to resume, or pass --restart to train from scratch",
        )
    if state.recipe_hash != r_hash:
        raise WanloraError(
            f"{state_dir}: the training settings changed since this run started",
            "undo the wanlora.toml change to resume, or pass --restart to train from scratch",
        )


def _tensorboard(log_dir: Path, expert: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: logging is optional
        return None
    return SummaryWriter(log_dir=str(log_dir / expert))


def train_project(
    project: Project,
    experts: list[str] | None = None,
    *,
    device: torch.device | None = None,
    overwrite: bool = False,
    restart: bool = False,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> list[ExpertResult]:
    """The whole recipe: each expert in turn (high, then low for Wan 2.2)."""
    names = experts or list(project.config.experts)
    unknown = [e for e in names if e not in project.config.experts]
    if unknown:
        raise WanloraError(
            f"unknown expert {unknown[0]!r} for recipe {project.config.recipe}",
            f"use one of: {', '.join(project.config.experts)}",
        )
    device = device or default_device()
    results = []
    for name in names:
        results.append(
            train_expert(
                project,
                name,
                device=device,
                overwrite=overwrite,
                restart=restart,
                on_step=on_step,
                on_epoch_end=on_epoch_end,
            )
        )
        # the expert's model, optimiser and CUDA graph pool go back before the next expert
        # plans its memory: without this the low-noise expert saw ~19 of 80 GiB free after
        # the high-noise one and ran a full-recompute plan, 40% slower (bench_multi_gpu.py)
        free_device_memory(device)
    return results
