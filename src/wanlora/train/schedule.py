"""Learning-rate schedules, built with transformers' own scheduler functions (TRAINER_SPEC 7).

The reference builds its schedule with the same transformers functions, so the lr of every
optimiser step matches it exactly.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
)

from ..dataset.discovery import find_images
from ..dataset.sources import DatasetEntry, dataset_sources
from ..errors import WanloraError
from ..recipes.project import Project
from ..recipes.schema import SchedulerSettings

# The recipe's dataset size when a project's images cannot be counted.
RECIPE_IMAGE_COUNT = 18

MIN_LR_RATIO_NOTE = (
    "lr_scheduler_min_lr_ratio is passed by the recipe but NOT applied by the reference's "
    "{scheduler} schedule; the lr ends at lr_end = {lr_end:g} (transformers' default)"
)


def make_scheduler(optimizer: Optimizer, settings: SchedulerSettings, total_steps: int) -> LambdaLR:
    """The lr scheduler for `total_steps` optimiser steps; call .step() after each one.

    Reference quirk, copied on purpose: `lr_scheduler_min_lr_ratio` is ignored. The
    reference passes it only to schedules that take a min-lr ratio (none of ours), so the
    polynomial schedule decays to `lr_end` (transformers' default 1e-7), not to
    lr * min_lr_ratio.
    """
    if total_steps < 1:
        raise WanloraError(
            f"the schedule needs at least one training step (got {total_steps})",
            "add images to the dataset or raise max_train_epochs",
        )
    warmup = settings.lr_warmup_steps
    if settings.lr_scheduler == "polynomial":
        initial_lr = optimizer.defaults["lr"]
        if settings.lr_end >= initial_lr:
            # transformers raises a bare ValueError for this; say what to change instead
            raise WanloraError(
                f"scheduler.lr_end ({settings.lr_end:g}) must be below the learning rate "
                f"({initial_lr:g})",
                "lower [scheduler] lr_end or raise [optimizer] learning_rate",
            )
        return get_polynomial_decay_schedule_with_warmup(
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total_steps,
            lr_end=settings.lr_end,
            power=settings.lr_scheduler_power,
        )
    if settings.lr_scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup)
    if settings.lr_scheduler == "linear":
        return get_linear_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
        )
    if settings.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
        )
    raise WanloraError(f"unknown lr_scheduler '{settings.lr_scheduler}'")  # pragma: no cover


def lr_schedule(settings: SchedulerSettings, lr: float, total_steps: int) -> list[float]:
    """The lr used by each optimiser step s = 0..total_steps-1, from a real scheduler."""
    dummy = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([dummy], lr=lr)
    scheduler = make_scheduler(optimizer, settings, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: a no-op that keeps the step order torch expects
        scheduler.step()
    return lrs


def min_lr_ratio_note(settings: SchedulerSettings) -> str | None:
    """A sentence for users when the recipe's min_lr_ratio has no effect (always, for now)."""
    if settings.lr_scheduler_min_lr_ratio is None:
        return None
    if settings.lr_scheduler == "polynomial":
        return MIN_LR_RATIO_NOTE.format(scheduler="polynomial", lr_end=settings.lr_end)
    return (
        f"lr_scheduler_min_lr_ratio is NOT applied by the reference's {settings.lr_scheduler} "
        "schedule"
    )


def steps_per_epoch(
    n_images: int, num_repeats: int, batch_size: int, gradient_accumulation_steps: int = 1
) -> int:
    """Optimiser steps per epoch: ceil(ceil(items * repeats / batch) / accumulation).

    Exact for batch size 1 (the recipe). With larger batches the reference fills batches
    per bucket, so a dataset spread over several buckets can take a few more steps.
    """
    batches = math.ceil(n_images * num_repeats / batch_size)
    return math.ceil(batches / gradient_accumulation_steps)


def count_dataset_images(project: Project) -> int:
    """Training images in the project's dataset folder(s); missing folders count as empty."""
    return sum(n for _, n in _entries_with_counts(project))


def total_training_steps(project: Project) -> int:
    """Optimiser steps of one expert's run: epochs x steps per epoch.

    Counts the images of each dataset folder (the reference runs the datasets one after
    another in an epoch). With no images yet, the recipe's 18 images stand in, so the
    schedule can be inspected before the dataset is in place.
    """
    config = project.config
    accumulation = config.training.gradient_accumulation_steps
    entries = _entries_with_counts(project)
    if sum(n for _, n in entries) == 0:
        settings = config.dataset
        per_epoch = steps_per_epoch(
            RECIPE_IMAGE_COUNT, settings.num_repeats, settings.batch_size, accumulation
        )
    else:
        batches = sum(steps_per_epoch(n, e.num_repeats, e.batch_size) for e, n in entries)
        per_epoch = math.ceil(batches / accumulation)
    return config.training.max_train_epochs * per_epoch


def _entries_with_counts(project: Project) -> list[tuple[DatasetEntry, int]]:
    entries = dataset_sources(project).entries
    return [
        (e, len(find_images(e.image_directory)) if e.image_directory.is_dir() else 0)
        for e in entries
    ]
