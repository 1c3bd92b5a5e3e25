"""Checks before any model is loaded: the dataset lints clean, the model files are sound.

Both run first in `wanlora train` (training.run_training) and in a torchrun launch
(launch.py), so a bad caption or a damaged file is one line before minutes of loading.
"""

from __future__ import annotations

from ..cache.build import model_paths
from ..dataset.lint import check_dataset
from ..errors import WanloraError
from ..models.dit import infer_dit_info
from ..models.files import (
    load_torch_state_dict,
    looks_like_torch_pickle,
    read_safetensors_header,
    require_kind,
    strip_comfy_prefix,
)
from ..models.registry import resolve_model_path
from ..outputs import lora_path
from ..recipes import Project
from ..train.state import latest_state_dir, read_state_meta


def check_dataset_clean(project: Project) -> None:
    """Refuse a dataset with errors (`wanlora check` lists them all)."""
    report = check_dataset(project)
    if report.errors:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise WanloraError(
            f"{first.path}: {first.message}{more}",
            f"run `wanlora check {project.root}` for the full list",
        )


def check_model_files(project: Project, experts, *, overwrite: bool, restart: bool) -> None:
    """Headers only, before any cache or model work: every model file this run will load is
    the right kind of file, readable without running pickled code, with consistent shapes."""
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
        if done and not overwrite and lora_path(project, expert).exists():
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
        shapes = {strip_comfy_prefix(k): v[1] for k, v in header.items()}
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
