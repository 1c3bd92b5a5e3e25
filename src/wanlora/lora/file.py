"""The saved LoRA file: tensors in the reference's key format plus its metadata.

Metadata has the reference's `ss_*` training keys and `modelspec.*` keys (title, author),
then ours under `wanlora.*` (recipe, expert, timestep range, steps, dataset hash). Values are
strings, as safetensors requires. No secret (token, key) ever goes in here: only fields of
the typed config are read.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from ..fsutil import atomic_path
from ..recipes.schema import LoraSettings, RecipeConfig
from .keys import ALPHA, DOWN, down_keys

ARCHITECTURES = {
    "t2v-A14B": "wan2.2_t2v_a14b",
    "t2v-14B": "wan2.1_t2v_14b",
    "i2v-A14B": "wan2.2_i2v_a14b",
    "ti2v-5B": "wan2.2_ti2v_5b",
}


def lora_metadata(
    config: RecipeConfig,
    expert: str,
    *,
    total_steps: int,
    steps_done: int,
    epochs_done: int,
    num_images: int,
    dataset_hash: str,
    started_at: float,
) -> dict[str, str]:
    """The metadata written with a LoRA (reference keys first, then ours)."""
    e = config.experts[expert]
    title = config.metadata_title(expert)
    meta = {
        "ss_network_module": config.lora.network_module,
        "ss_network_dim": str(config.lora.network_dim),
        "ss_network_alpha": str(config.lora.network_alpha),
        "ss_network_dropout": str(config.lora.network_dropout or 0.0),
        "ss_learning_rate": str(config.optimizer.learning_rate),
        "ss_optimizer": f"torch.optim.adamw.AdamW(weight_decay={config.optimizer.weight_decay})",
        "ss_max_grad_norm": str(config.optimizer.max_grad_norm),
        "ss_lr_scheduler": config.scheduler.lr_scheduler,
        "ss_lr_scheduler_power": str(config.scheduler.lr_scheduler_power),
        "ss_num_epochs": str(config.training.max_train_epochs),
        "ss_epoch": str(epochs_done),
        "ss_max_train_steps": str(total_steps),
        "ss_steps": str(steps_done),
        "ss_num_train_images": str(num_images),
        "ss_batch_size_per_device": str(config.dataset.batch_size),
        "ss_gradient_accumulation_steps": str(config.training.gradient_accumulation_steps),
        "ss_gradient_checkpointing": str(config.training.gradient_checkpointing),
        "ss_mixed_precision": config.training.mixed_precision,
        "ss_fp8_base": str(config.training.fp8_base),
        "ss_seed": str(config.training.seed),
        "ss_timestep_sampling": config.timesteps.timestep_sampling,
        "ss_discrete_flow_shift": str(config.timesteps.discrete_flow_shift),
        "ss_sigmoid_scale": str(config.timesteps.sigmoid_scale),
        "ss_min_timestep": str(e.min_timestep),
        "ss_max_timestep": str(e.max_timestep),
        "ss_preserve_distribution_shape": str(config.timesteps.preserve_distribution_shape),
        "ss_output_name": config.output_name(expert),
        "ss_training_started_at": str(started_at),
        "ss_training_finished_at": str(time.time()),
        "ss_resolution": f"({config.dataset.resolution[0]}, {config.dataset.resolution[1]})",
        "ss_dataset_dirs": json.dumps(
            {"dataset": {"n_repeats": config.dataset.num_repeats, "img_count": num_images}}
        ),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{ARCHITECTURES[config.task]}/lora",
        "modelspec.implementation": "https://github.com/Wan-Video/Wan2.1",
        "modelspec.title": title,
        "modelspec.author": config.project.author,
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
        "modelspec.resolution": f"{config.dataset.resolution[0]}x{config.dataset.resolution[1]}",
        "wanlora.version": __version__,
        "wanlora.recipe": config.recipe,
        "wanlora.expert": expert,
        "wanlora.timestep_range": f"{e.min_timestep}-{e.max_timestep}",
        "wanlora.dataset_hash": dataset_hash,
    }
    return meta


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in key order (the file's content identity, not its bytes)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(
            tensors[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def save_lora_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write atomically: a crash mid-save leaves the previous file (or none), never half a file."""
    metadata = dict(metadata)
    metadata["sshs_model_hash"] = tensors_hash(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118


def lora_file_settings(tensors: dict[str, torch.Tensor]) -> LoraSettings:
    """Rank and alpha of a saved LoRA, read off its tensors."""
    downs = down_keys(tensors)
    if not downs:
        raise ValueError(f"no {DOWN} tensors")
    rank = tensors[downs[0]].shape[0]
    alpha_key = downs[0].removesuffix(DOWN) + ALPHA
    alpha = float(tensors[alpha_key]) if alpha_key in tensors else float(rank)
    return LoraSettings(network_dim=rank, network_alpha=alpha)
