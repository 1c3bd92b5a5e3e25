"""What `wanlora train` does around the loop: lint first, then each expert with progress."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WanloraError
from ..recipes import Project
from .loop import EpochCallback, ExpertResult, StepCallback, train_project
from .lora_file import read_lora_file


def run_training(
    project: Project,
    *,
    experts: list[str] | None = None,
    device: torch.device | None = None,
    overwrite: bool = False,
    restart: bool = False,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> list[ExpertResult]:
    """Refuse a dataset with errors before any model is loaded, then train."""
    from ..dataset.lint import check_dataset

    report = check_dataset(project)
    if report.errors:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise WanloraError(
            f"{first.path}: {first.message}{more}",
            f"run `wanlora check {project.root}` for the full list",
        )
    return train_project(
        project,
        experts,
        device=device,
        overwrite=overwrite,
        restart=restart,
        on_step=on_step,
        on_epoch_end=on_epoch_end,
    )


def describe_lora(path: Path) -> str:
    """A short human summary of a LoRA file: modules, rank, dtype, title."""
    tensors, metadata = read_lora_file(path)
    downs = [k for k in tensors if k.endswith(".lora_down.weight")]
    rank = tensors[downs[0]].shape[0] if downs else 0
    dtype = str(tensors[downs[0]].dtype).replace("torch.", "") if downs else "?"
    return (
        f"  {path}\n"
        f"    {len(downs)} LoRA modules (rank {rank}, {dtype}), title {metadata.get('modelspec.title')!r}, "
        f"timesteps {metadata.get('wanlora.timestep_range')}, {metadata.get('ss_steps')} steps"
    )
