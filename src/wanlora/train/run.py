"""What `wanlora train` does around the loop: lint first, then each expert with progress."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WanloraError
from ..recipes import Project
from .lock import project_lock, remove_leftovers
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
    devices: list[str] | None = None,
    parallel_experts: bool | None = None,
    data_parallel: int = 1,
) -> list[ExpertResult]:
    """Refuse a dataset with errors before any model is loaded, then train (holding the
    project's lock: a second `wanlora train` on it refuses, naming this one's pid).

    Several devices (`devices`, default: every visible GPU unless `device` is given): the
    experts train side by side and/or data-parallel, in worker processes (distributed.py)."""
    with project_lock(project.root, "train"):
        remove_leftovers(project.root, project.output_dir, project.cache_dir)
        return _lint_and_train(
            project,
            experts=experts,
            device=device,
            overwrite=overwrite,
            restart=restart,
            on_step=on_step,
            on_epoch_end=on_epoch_end,
            devices=devices,
            parallel_experts=parallel_experts,
            data_parallel=data_parallel,
        )


def _lint_and_train(
    project: Project,
    *,
    experts,
    device,
    overwrite,
    restart,
    on_step,
    on_epoch_end,
    devices=None,
    parallel_experts=None,
    data_parallel=1,
):
    from ..dataset.lint import check_dataset

    report = check_dataset(project)
    if report.errors:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise WanloraError(
            f"{first.path}: {first.message}{more}",
            f"run `wanlora check {project.root}` for the full list",
        )
    _check_model_files(project, experts, overwrite=overwrite, restart=restart)
    from .distributed import plan_jobs, run_parallel

    waves = plan_jobs(
        experts or list(project.config.experts),
        devices or ([str(device)] if device is not None else None),
        data_parallel=data_parallel,
        parallel_experts=parallel_experts,
    )
    if waves is not None:
        # worker processes: the callback cannot travel, but a TrainingMonitor's work can (each
        # worker runs its own); any other on_epoch_end would be silently skipped
        from ..sampling.training import TrainingMonitor

        monitor = isinstance(on_epoch_end, TrainingMonitor)
        if on_epoch_end is not None and not monitor:
            raise WanloraError(
                "an on_epoch_end callback cannot run in worker processes",
                "train on one device (devices=[...] with one entry), or leave on_epoch_end out",
            )
        return run_parallel(
            project, waves, overwrite=overwrite, restart=restart, on_step=on_step, monitor=monitor
        )
    return train_project(
        project,
        experts,
        device=device or (torch.device(devices[0]) if devices else None),
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


def _check_model_files(project: Project, experts, *, overwrite: bool, restart: bool) -> None:
    """Headers only, before any cache or model work: every model file this run will load is
    the right kind of file, readable without running pickled code, with consistent shapes."""
    from ..cache.build import model_paths
    from ..models.dit import infer_dit_info
    from ..models.files import (
        load_torch_state_dict,
        looks_like_torch_pickle,
        read_safetensors_header,
        require_kind,
    )
    from ..models.registry import resolve_model_path
    from .loop import output_path
    from .state import latest_state_dir, read_state_meta

    paths = model_paths(project)
    for kind in ("vae", "text_encoder"):
        path = paths[kind]
        if not path.is_file():
            continue  # build_cache names a missing file, with the download hint
        if looks_like_torch_pickle(path):  # weights_only: a pickle never runs code
            names = set(load_torch_state_dict(path))
        else:
            names = set(read_safetensors_header(path))
        require_kind(path, names, kind)
    for expert in experts or list(project.config.experts):
        if expert not in project.config.experts:
            continue  # train_project names the unknown expert
        state = None if restart else latest_state_dir(project.output_dir, expert)
        done = state is not None and read_state_meta(state).finished
        if done and not overwrite and output_path(project, expert).exists():
            continue  # already trained: its DiT is not loaded
        dit = resolve_model_path(
            project.config.experts[expert].dit, project.models_dir, project.root
        )
        if not dit.exists():
            raise WanloraError(
                f"{dit}: DiT file for the {expert} expert not found",
                f"run `wanlora download {project.root}` or set experts.{expert}.dit in wanlora.toml",
            )
        infer_dit_info(dit)
        header = read_safetensors_header(dit)
        shapes = {_strip_prefix(k): v[1] for k, v in header.items()}
        for name, shape in shapes.items():
            parts = name.split(".", 2)
            if parts[0] == "blocks" and len(parts) == 3:
                first = shapes.get(f"blocks.0.{parts[2]}")
                if first is not None and first != shape:
                    raise WanloraError(
                        f"{dit}: tensor {name} has shape {list(shape)}, block 0 has {list(first)} "
                        "(a damaged or foreign file)",
                        f"delete {dit.name} and run `wanlora download` again",
                    )
        q = shapes.get("blocks.0.self_attn.q.weight")
        if q is not None and (len(q) != 2 or q[0] != q[1]):
            raise WanloraError(
                f"{dit}: blocks.0.self_attn.q.weight has shape {list(q)}, not square "
                "(a damaged or foreign file)",
                f"delete {dit.name} and run `wanlora download` again",
            )


def _strip_prefix(name: str) -> str:
    from ..models.files import strip_comfy_prefix

    return strip_comfy_prefix(name)
