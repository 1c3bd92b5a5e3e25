"""Resume points: output/state/<expert>/step-NNNNNNNN/ holds everything a run needs to go on.

A state is written into a hidden temporary folder and renamed into place only once complete,
so a kill during a write leaves the previous state as the newest one. The two newest states
are kept.

Where a run starts (`start_point`: fresh, resumed, or already done) is decided from these
folders and the LoRA file before any heavy work; the run layer asks, then hands the state
folder to train_expert, which loads it (`load_state`) and checks it is this run's
(`check_resume`: same dataset, same training settings).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import faults
from ..errors import WanloraError
from ..fsutil import disk_full_error, is_disk_full
from ..lora.file import read_lora_file, save_lora_file
from ..outputs import OutputLayout
from ..recipes.schema import RecipeConfig

KEEP_STATES = 2
_STATE_PREFIX = "step-"


@dataclass
class TrainState:
    """What a resume needs besides the model: where we were and what we trained on."""

    step: int
    epoch: int
    batch_in_epoch: int
    finished: bool
    dataset_hash: str
    recipe_hash: str


@dataclass
class TrainingParts:
    """The in-memory side of a run: what a step changes and a resume state saves."""

    model: torch.nn.Module  # carries the LoRA (its weights are the state's lora.safetensors)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # noise and timesteps


def recipe_hash(config: RecipeConfig, expert: str) -> str:
    """Hash of everything that changes what this expert's training computes."""
    data = config.model_dump(mode="json", exclude={"project", "sample", "description"})
    data["experts"] = {expert: data["experts"][expert]}
    # not what is computed: how often states are saved, loader threads, the memory budget
    # (it changes only storage and recompute, both bit-identical), CUDA graphs (rounding only)
    skip = ("save_state_every_n_steps", "max_data_loader_n_workers", "max_vram_gb", "cuda_graph")
    for key in skip:
        data["training"].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def state_root(output_dir: Path, expert: str) -> Path:
    return OutputLayout(output_dir, {}).state_dir(expert)


def latest_state_dir(output_dir: Path, expert: str) -> Path | None:
    root = state_root(output_dir, expert)
    if not root.is_dir():
        return None
    complete = sorted(
        p
        for p in root.iterdir()
        if p.name.startswith(_STATE_PREFIX) and (p / "meta.json").is_file()
    )
    return complete[-1] if complete else None


@dataclass(frozen=True)
class StartPoint:
    """Where an expert's run starts: a state folder to resume from (None: from scratch), or
    nothing to do (`done_steps`: the steps of the finished run whose LoRA is there)."""

    state_dir: Path | None
    done_steps: int | None = None


def start_point(
    output_dir: Path, expert: str, lora_file: Path, *, overwrite: bool, restart: bool
) -> StartPoint:
    """Resume, fresh start or done, from the states and the LoRA file alone (no heavy work)."""
    state_dir = None if restart else latest_state_dir(output_dir, expert)
    if state_dir is not None and read_state_meta(state_dir).finished:
        if lora_file.exists() and not overwrite:
            return StartPoint(state_dir, done_steps=read_state_meta(state_dir).step)
        if overwrite:  # a finished run asked to be redone: start from scratch
            state_dir = None
    if state_dir is None and lora_file.exists() and not overwrite:
        raise WanloraError(
            f"{lora_file} already exists",
            "pass --overwrite to replace it, or change project.name in wanlora.toml",
        )
    return StartPoint(state_dir)


def check_resume(state: TrainState, data_hash: str, r_hash: str, state_dir: Path) -> None:
    """A resume state belongs to this run: same dataset, same training settings."""
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


def save_state(
    output_dir: Path,
    expert: str,
    state: TrainState,
    lora_tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> Path:
    root = state_root(output_dir, expert)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_STATE_PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_lora_file(tmp / "lora.safetensors", lora_tensors, {})
        with open(tmp / "trainer.pt", "wb") as f:  # a file object: a full disk stays an OSError
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "numpy_rng": np.random.get_state(),
                    "python_rng": random.getstate(),
                },
                f,
            )
        faults.point("state_write", tmp)  # test hook (faults.py): inert unless asked
        _write_json(tmp / "meta.json", state.__dict__)  # written last: marks completeness
        _fsync_tree(tmp)
    except BaseException as exc:  # no half-written folder left behind (a kill leaves one: _prune)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, WanloraError) or is_disk_full(exc):
            needed = 4 * sum(t.numel() * 4 for t in lora_tensors.values())  # lora + Adam, fp32
            raise disk_full_error(root, needed) from None
        raise
    if final.exists():  # same step saved again (e.g. a stop right after a periodic save):
        old = root / f".tmp-old-{final.name}-{os.getpid()}"  # move it aside, never delete first
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _prune(root)
    return final


def load_state(
    state_dir: Path,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> tuple[TrainState, dict[str, torch.Tensor]]:
    try:
        meta = json.loads((state_dir / "meta.json").read_text(encoding="utf-8"))
        tensors, _ = read_lora_file(state_dir / "lora.safetensors")
        trainer = torch.load(state_dir / "trainer.pt", weights_only=False, map_location="cpu")
    except Exception as exc:
        raise WanloraError(
            f"{state_dir}: resume state is unreadable ({type(exc).__name__})",
            "delete this folder to resume from the previous state, or train with --restart",
        ) from None
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    scaler.load_state_dict(trainer["scaler"])
    generator.set_state(trainer["generator"])
    torch.set_rng_state(trainer["torch_rng"])
    np.random.set_state(trainer["numpy_rng"])
    random.setstate(trainer["python_rng"])
    return TrainState(**meta), tensors


def clear_states(output_dir: Path, expert: str) -> None:
    """Remove an earlier run's states before a fresh start: otherwise their higher step numbers
    would win over the new run's (in _prune and in a resume after a kill)."""
    root = state_root(output_dir, expert)
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def read_state_meta(state_dir: Path) -> TrainState:
    return TrainState(**json.loads((state_dir / "meta.json").read_text(encoding="utf-8")))


def _prune(root: Path) -> None:
    states = sorted(p for p in root.iterdir() if p.name.startswith(_STATE_PREFIX))
    for old in states[:-KEEP_STATES]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".tmp-*"):  # from a killed run
        shutil.rmtree(leftover, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
