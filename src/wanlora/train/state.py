"""Resume points: output/state/<expert>/step-NNNNNNNN/ holds everything a run needs to go on.

A state is written into a hidden temporary folder and renamed into place only once complete,
so a kill during a write leaves the previous state as the newest one. The two newest states
are kept.

Where a run starts (`start_point`: fresh, resumed, or already done) is decided from these
folders and the LoRA file before any heavy work; the run layer asks, then hands the state
folder to train_expert, which loads it (`load_state`) and checks it is this run's
(`check_resume`: same dataset, same training settings).

A state folder holds:

    lora.safetensors     the LoRA tensors (fp32)
    trainer.safetensors  every tensor of the optimiser, scheduler, loss scaler and RNGs
    trainer.json         everything else about them, tensors named by {"$tensor": "<name>"}
    meta.json            TrainState; written last, so its presence marks a complete state

Reading a state runs no code: only safetensors and JSON are parsed, never a pickle. A state
folder copied from elsewhere can at worst hold wrong numbers, not a program. trainer.json
keeps what JSON cannot say in one-key objects: {"$tuple": [...]} (optimiser betas, Python's
random state), {"$int_keys": {"0": ...}} (the optimiser's per-parameter state). Python floats
are written with repr, which reads back bit for bit. A folder with a trainer.pt (the pickle of
earlier versions) is refused unread.
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
from safetensors.torch import load_file, save_file

from .. import faults
from ..errors import WanloraError
from ..fsutil import disk_full_error, is_disk_full
from ..lora.file import read_lora_file, save_lora_file
from ..outputs import OutputLayout
from ..recipes.effects import trained_settings
from ..recipes.schema import RecipeConfig

KEEP_STATES = 2
_STATE_PREFIX = "step-"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
_TRAINER_FORMAT = 1
_TRAINER_PARTS = {"optimizer", "scheduler", "scaler", "generator", "torch_rng", "python_rng"}
_UNSAFE_OLD_FILE = "trainer.pt"  # earlier versions' torch pickle: never read
# one-key objects in trainer.json for what JSON has no type for
_TENSOR, _TUPLE, _INT_KEYS = "$tensor", "$tuple", "$int_keys"


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
    """Hash of the settings that shape this expert's LoRA: the RESULT fields of
    recipes/effects.py, so a resume is refused exactly for the edits that would retrain."""
    data = trained_settings(config, expert)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def legacy_recipe_hash(config: RecipeConfig, expert: str) -> str:
    """recipe_hash as versions before run records computed it: a state they saved is
    recognised (run/adopt.py re-keys it) instead of refused as changed settings."""
    # [validation] did not exist then
    data = config.model_dump(
        mode="json", exclude={"project", "sample", "validation", "description"}
    )
    data["experts"] = {expert: data["experts"][expert]}
    # not in the legacy hash: fields that did not exist then (text_fold)
    skip = ("save_state_every_n_steps", "max_data_loader_n_workers", "max_vram_gb", "cuda_graph")
    skip += ("text_fold",)
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
            "pass --new-run to train a new run (this one is kept in output/runs/), or change project.name in wanlora.toml",
        )
    return StartPoint(state_dir)


def check_resume(state: TrainState, data_hash: str, r_hash: str, state_dir: Path) -> None:
    """A resume state belongs to this run: same dataset, same training settings."""
    if state.dataset_hash != data_hash:
        raise WanloraError(
            f"{state_dir}: the dataset changed since this run started (images, captions or buckets)",
            "restore the dataset to resume, or pass --new-run to train from scratch (this run is kept)",
        )
    if state.recipe_hash != r_hash:
        raise WanloraError(
            f"{state_dir}: the training settings changed since this run started",
            "undo the wanlora.toml change to resume, or pass --new-run to train from scratch (this run is kept)",
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
    faults.point("state_save", final)  # test hooks (faults.py): inert unless asked
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_lora_file(tmp / "lora.safetensors", lora_tensors, {})
        tensors: dict[str, torch.Tensor] = {}
        trainer = _encode(_trainer_state(optimizer, scheduler, scaler, generator), "", tensors)
        save_file(tensors, tmp / TRAINER_TENSORS)  # a full disk: "os error 28", is_disk_full
        _write_json(tmp / TRAINER_JSON, {"format": _TRAINER_FORMAT, **trainer})
        faults.point("state_write", tmp)
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
    trainer = read_trainer_state(state_dir)  # first: refuses an unsafe folder unread
    try:
        meta = json.loads((state_dir / "meta.json").read_text(encoding="utf-8"))
        tensors, _ = read_lora_file(state_dir / "lora.safetensors")
        state = TrainState(**meta)
        # a tampered trainer.json can parse and still not fit: that is unreadable too
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        scaler.load_state_dict(trainer["scaler"])
        generator.set_state(trainer["generator"])
        torch.set_rng_state(trainer["torch_rng"])
        np.random.set_state(trainer["numpy_rng"])
        random.setstate(trainer["python_rng"])
    except Exception as exc:
        raise _unreadable(state_dir, exc) from None
    return state, tensors


def read_trainer_state(state_dir: Path) -> dict:
    """The optimiser, scheduler, scaler and RNG states of a state folder, as their objects'
    own state_dict()/get_state() gave them (numpy_rng: np.random.get_state()'s tuple).

    Parses only trainer.safetensors and trainer.json; a folder with an earlier version's
    trainer.pt (a pickle, which could run code when read) is refused without opening it.
    """
    if (state_dir / _UNSAFE_OLD_FILE).exists():
        raise WanloraError(
            f"{state_dir}: resume state is in an older, unsafe format ({_UNSAFE_OLD_FILE}, "
            "a pickle that could run code); it is not read",
            "train with --new-run (or delete the folder) to start over",
        )
    try:
        stored = load_file(state_dir / TRAINER_TENSORS, device="cpu")
        data = json.loads((state_dir / TRAINER_JSON).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.pop("format", None) != _TRAINER_FORMAT:
            raise ValueError(f"{TRAINER_JSON}: not format {_TRAINER_FORMAT}")
        used: set[str] = set()
        trainer = _decode(data, stored, used)
        if used != stored.keys():
            raise ValueError(f"{TRAINER_TENSORS}: tensors that {TRAINER_JSON} does not name")
        numpy_rng = trainer["numpy_rng"]
        trainer["numpy_rng"] = (
            numpy_rng["bit_generator"],
            numpy_rng["key"].numpy().astype(np.uint32),
            numpy_rng["pos"],
            numpy_rng["has_gauss"],
            numpy_rng["cached_gaussian"],
        )
        missing = _TRAINER_PARTS - trainer.keys()  # unreadable now, not a KeyError later
        if missing:
            raise KeyError(f"{TRAINER_JSON}: no {sorted(missing)}")
    except Exception as exc:
        raise _unreadable(state_dir, exc) from None
    return trainer


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


def _unreadable(state_dir: Path, exc: Exception) -> WanloraError:
    return WanloraError(
        f"{state_dir}: resume state is unreadable ({type(exc).__name__})",
        "delete this folder to resume from the previous state, or train with --new-run",
    )


def _trainer_state(optimizer, scheduler, scaler, generator) -> dict:
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {
            "bit_generator": str(bit_generator),
            "key": torch.from_numpy(key.astype(np.int64)),  # uint32 words, int64: exact
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python_rng": random.getstate(),
    }


def _encode(value, path: str, tensors: dict[str, torch.Tensor]):
    """JSON for `value`; its tensors go into `tensors`, named by where they sit."""
    if isinstance(value, torch.Tensor):
        name = path if path not in tensors else f"{path}#{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {_TENSOR: name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(v, _at(path, i), tensors) for i, v in enumerate(value)]
        return {_TUPLE: items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        keys = list(value)
        if keys and all(type(k) is int for k in keys):
            return {
                _INT_KEYS: {str(k): _encode(v, _at(path, k), tensors) for k, v in value.items()}
            }
        if all(isinstance(k, str) and not k.startswith("$") for k in keys):
            return {k: _encode(v, _at(path, k), tensors) for k, v in value.items()}
    raise TypeError(f"a resume state cannot hold {type(value).__name__} (at '{path}')")


def _at(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _decode(value, tensors: dict[str, torch.Tensor], used: set[str]):
    """The inverse of _encode: plain JSON data and the file's tensors, nothing else."""
    if isinstance(value, list):
        return [_decode(v, tensors, used) for v in value]
    if not isinstance(value, dict):
        return value
    tagged = [k for k in value if k.startswith("$")]
    if not tagged:
        return {k: _decode(v, tensors, used) for k, v in value.items()}
    if len(value) != 1:
        raise ValueError(f"{TRAINER_JSON}: a tag {tagged[0]!r} beside other keys")
    tag, inner = next(iter(value.items()))
    if tag == _TENSOR and isinstance(inner, str):
        used.add(inner)
        return tensors[inner]
    if tag == _TUPLE and isinstance(inner, list):
        return tuple(_decode(v, tensors, used) for v in inner)
    if tag == _INT_KEYS and isinstance(inner, dict):
        return {int(k): _decode(v, tensors, used) for k, v in inner.items()}
    raise ValueError(f"{TRAINER_JSON}: unknown or malformed {tag!r}")


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
