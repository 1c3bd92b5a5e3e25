"""One expert end to end, and a project's experts one after the other, in this process.

    run_expert:  where it starts (train.state.start_point: resume, fresh, or already done)
                 -> the data (items, cache, tensors in memory) -> the callbacks (loss log,
                 validation, the caller's) -> wanlora.train.loop.train_expert with the strategy
    train_project: each expert in turn, the device's memory freed in between

A worker process (workers.py) and a user's torchrun launch (launch.py) call run_expert too,
with their own strategy and callbacks.
"""

from __future__ import annotations

import logging

import torch

from ..cache.build import build_cache, default_device, load_cached_tensors
from ..dataset.items import load_items
from ..device_memory import free_device_memory
from ..errors import WanloraError
from ..outputs import OutputLayout
from ..recipes import Project
from ..train.callbacks import EpochCallback, ExpertResult, StepCallback, chain
from ..train.data import TrainingData, dataset_hash
from ..train.loop import train_expert
from ..train.state import start_point
from ..train.strategy import ParallelStrategy, SingleProcess
from .callbacks import LossLog
from .validation import held_out_split, validation_monitor

log = logging.getLogger(__name__)


def prepare_data(project: Project, device: torch.device) -> TrainingData:
    """The dataset's items, their cache (built or reused on `device`), tensors in memory;
    the items `[validation] items` names are held out of training (validation.py)."""
    all_items = load_items(project)
    all_entries = build_cache(project, items=all_items, device=device).entries
    train, held = held_out_split(project, all_items)
    items, entries = [all_items[i] for i in train], [all_entries[i] for i in train]
    data_id = dataset_hash(items, [e.latent_path for e in entries], [e.text_path for e in entries])
    held_samples = load_cached_tensors([all_entries[i] for i in held])
    return TrainingData(
        items, load_cached_tensors(entries), data_id, [all_items[i] for i in held], held_samples
    )


def run_expert(
    project: Project,
    expert: str,
    *,
    device: torch.device | None = None,
    overwrite: bool = False,
    restart: bool = False,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
    strategy: ParallelStrategy | None = None,
) -> ExpertResult:
    """Train one expert's LoRA; resume from output/state/<expert>/ when a state is there."""
    strategy = strategy or SingleProcess()
    device = device or default_device()
    layout = OutputLayout.of(project)
    lora = layout.lora(expert)
    # resume, fresh start or nothing to do: decided before any heavy work
    start = start_point(project.output_dir, expert, lora, overwrite=overwrite, restart=restart)
    if start.done_steps is not None:
        log.info("%s: already trained -> %s", expert, lora)
        return ExpertResult(expert, lora, start.done_steps, None, skipped=True)
    data = prepare_data(project, device)
    # the process that writes the run's files logs its loss curve and validates
    loss_log = LossLog(layout.logs_dir(expert)) if strategy.writes_files else None
    fresh = start.state_dir is None
    check = validation_monitor(project, expert, data, device, fresh=fresh) if loss_log else None
    try:
        return train_expert(
            project,
            expert,
            data,
            device=device,
            resume_from=start.state_dir,
            strategy=strategy,
            on_step=chain(loss_log, check.on_step if check else None, on_step),
            on_epoch_end=chain(check, on_epoch_end),
        )
    finally:
        if loss_log is not None:
            loss_log.close()
        if check is not None:
            check.close()


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
    check_experts(project, names)
    device = device or default_device()
    results = []
    for name in names:
        results.append(
            run_expert(
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


def check_experts(project: Project, names: list[str]) -> None:
    """Every name is one of the recipe's experts."""
    unknown = [e for e in names if e not in project.config.experts]
    if unknown:
        raise WanloraError(
            f"unknown expert {unknown[0]!r} for recipe {project.config.recipe}",
            f"use one of: {', '.join(project.config.experts)}",
        )
