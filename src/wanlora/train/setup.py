"""Setting up one expert's training, one named part at a time (the loop calls them in order).

    expert_dit         the expert's DiT file and the dtype training computes in
    load_expert_model  the expert's DiT (fp8-rounded like the reference), its speed plan
                       (speed/: storage, recompute, compile, and below the budget of the
                       weights the blocks streamed from host memory), the LoRA
    make_optimizer     AdamW over the LoRA parameters
    make_grad_scaler   loss scaling for fp16, its scale set up now
    start_state        a fresh TrainState, or the resume state loaded and checked
    graphed_step       the CUDA graph of the whole step, where the step allows one

The schedule is schedule.make_scheduler; the state files are state.py's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import faults
from ..dataset.clips import VAE_FRAME_STRIDE
from ..dataset.sources import longest_clip_frames
from ..errors import WanloraError
from ..lora.inject import add_lora, load_lora_state_dict, lora_parameters
from ..models.dit import infer_dit_info, load_dit
from ..models.precision import compute_dtype, grad_scaler
from ..models.registry import resolve_model_path
from ..recipes import Project
from ..recipes.schema import OptimizerSettings, RecipeConfig
from . import ti2v
from .failures import out_of_memory
from .speed.block_swap import install_block_swap
from .speed.cuda_graph import GraphedStep, set_capturable, why_not_graphed
from .speed.memory_plan import DitShape, tokens_for_resolution
from .speed.prepare import prepare_base, prepare_for_speed
from .speed.swap_plan import SwapPlan, plan_with_swap
from .state import TrainingParts, TrainState, check_resume, load_state
from .step import step_functions

log = logging.getLogger(__name__)


def load_expert_model(
    project: Project, expert: str, config: RecipeConfig, device: torch.device
) -> tuple[torch.nn.Module, torch.dtype]:
    """The expert's DiT with its LoRA, in train mode, and the dtype it computes in."""
    dit_path, dtype = expert_dit(project, expert, config)
    plan = speed_plan(config, device, dtype, dit_path, longest_clip_frames(project))
    check_plan_fits(plan, config.training.max_vram_gb, expert)
    # streamed blocks never go to the GPU whole: the model is built on the CPU (the file is
    # mmapped, so only the fp8 copies take host memory) and the swap moves the rest over
    load_device = torch.device("cpu") if plan.swap_indices else device
    try:
        model, _info = load_dit(
            dit_path,
            dtype=plan.load_dtype,
            device=load_device,
            fp8_round=config.training.fp8_base,
            task=config.dit_task,
        )
        prepare_base(model, plan)
        add_lora(model, config.lora)
        prepare_for_speed(model, plan, device)
        install_block_swap(model, plan, device)  # after recompute is set: swapped blocks need it
        faults.point("model_load", expert)  # test hook (faults.py): inert unless asked
    except torch.OutOfMemoryError as exc:
        raise out_of_memory(expert, f"while loading {dit_path.name} on {device}", exc) from None
    model.train()
    return model, dtype


def expert_dit(project: Project, expert: str, config: RecipeConfig) -> tuple[Path, torch.dtype]:
    """The expert's DiT file and the dtype training computes in (from the header alone:
    the file's dtype decides it before any weight is read)."""
    dit_path = resolve_model_path(config.experts[expert].dit, project.models_dir, project.root)
    if not dit_path.exists():
        raise WanloraError(
            f"{dit_path}: DiT file for the {expert} expert not found",
            f"run `wanlora download {project.root}` or set experts.{expert}.dit in wanlora.toml",
        )
    dtype = compute_dtype(
        config.training.mixed_precision, infer_dit_info(dit_path).file_dtype, dit_path
    )
    return dit_path, dtype


def plan_tokens(config: RecipeConfig, frames: int = 1) -> tuple[int, bool]:
    """The memory plan's micro-batch: its DiT tokens (batch_size clips of `frames` frames at
    the dataset resolution), and whether it may pass per-token timesteps (TI2V-5B)."""
    latent_frames = 1 + (frames - 1) // VAE_FRAME_STRIDE
    resolution, step = config.dataset.resolution, config.size_step
    tokens = tokens_for_resolution(resolution, latent_frames, step) * config.dataset.batch_size
    return tokens, ti2v.uses_per_token_timesteps(config, latent_frames)


def speed_plan(
    config: RecipeConfig,
    device: torch.device,
    dtype: torch.dtype,
    dit_path: Path,
    frames: int = 1,
) -> SwapPlan:
    """fp8 storage of the block linears, recompute policy, compiled blocks, and (below what
    the resident weights need) blocks streamed from pinned host memory (speed/). The
    defaults keep the reference's numerics, training.speed = "fast" does not. The memory
    budget (training.max_vram_gb, else the card's free memory now: the cache step has freed
    the VAE and text encoder) picks storage, recompute count and streamed blocks, for the
    longest clip (`frames`: longest_clip_frames) at the dataset resolution."""
    shape = DitShape.from_header(dit_path)
    tokens, per_token = plan_tokens(config, frames)
    return plan_with_swap(
        config.training,
        device,
        dtype,
        tokens=tokens,
        shape=shape,
        rank=config.lora.network_dim,
        per_token=per_token,
    )


def check_plan_fits(plan: SwapPlan, max_vram_gb: float | None, expert: str) -> None:
    """A budget the smallest plan (every block streamed) cannot meet: refuse when the user set
    it, else warn."""
    problem = plan.problem()
    if problem is None:
        return
    what, fix = problem
    if max_vram_gb is not None:
        raise WanloraError(f"{expert}: {what}", fix)
    log.warning("%s: %s (free GPU memory); the run may run out of memory", expert, what)


def make_optimizer(
    model: torch.nn.Module, settings: OptimizerSettings, device: torch.device
) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        lora_parameters(model),
        lr=settings.learning_rate,
        betas=settings.betas,
        eps=settings.eps,
        weight_decay=settings.weight_decay,
        # one kernel for all LoRA tensors, and GradScaler then skips its host sync; the same
        # update as the reference's AdamW up to float32 rounding (last bit)
        fused=device.type == "cuda",
    )


def make_grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (models/precision.py), its scale set up now: a data-parallel
    rank can reach a step with no batch of its own (an epoch's tail). The scale is the one
    the first scaled loss would set up; a resume's load_state_dict fills it in place."""
    scaler = grad_scaler(device, dtype)
    scaler.scale(torch.zeros((), device=device))
    return scaler


def start_state(
    resume_from: Path | None,
    parts: TrainingParts,
    dataset_hash: str,
    recipe_hash: str,
    expert: str,
    total_steps: int,
) -> TrainState:
    """Step 0 of a fresh run, or the resume state (optimiser, schedule, loss scale, random
    streams and LoRA weights loaded in place) after checking it is this run's."""
    if resume_from is None:
        return TrainState(0, 0, 0, False, dataset_hash, recipe_hash)
    state, tensors = load_state(
        resume_from, parts.optimizer, parts.scheduler, parts.scaler, parts.generator
    )
    check_resume(state, dataset_hash, recipe_hash, resume_from)
    load_lora_state_dict(parts.model, tensors)
    log.info("%s: resuming at step %d/%d from %s", expert, state.step, total_steps, resume_from)
    return state


def graphed_step(
    parts: TrainingParts,
    config: RecipeConfig,
    device: torch.device,
    dtype: torch.dtype,
    *,
    ranks: int,
    expert: str,
) -> GraphedStep | None:
    """The whole step (forward, backward, optimiser, loss scale) replayed from a CUDA graph
    when the step allows it (speed/cuda_graph.py): same kernels, no launch overhead. Call it
    after start_state: the optimiser's groups are made capturable, or plain, either way."""
    model = parts.model
    not_graphed = why_not_graphed(
        config.training,
        config.optimizer.max_grad_norm,
        device,
        len(model.wanlora_checkpointed),
        ranks,
    )
    set_capturable(parts.optimizer, device, on=not_graphed is None)
    log.info("%s: CUDA graph %s", expert, "on" if not_graphed is None else f"off ({not_graphed})")
    if not_graphed is not None:
        return None
    loss_for = step_functions(config)[2]
    return GraphedStep(
        lambda *inputs: loss_for(model, *inputs, dtype, cache_enabled=False),
        lora_parameters(model),
        parts.optimizer,
        parts.scaler,
    )
