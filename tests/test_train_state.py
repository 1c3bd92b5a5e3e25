"""Resume states: safetensors + JSON that give back the exact trainer state, and run no code.

The bit-identical checks use the real pieces of a run: torch's AdamW (fused=False, the CPU
path), the transformers polynomial schedule from schedule.make_scheduler, a CPU GradScaler
enabled and disabled, a CPU torch.Generator and the torch / numpy / Python global RNGs.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wanlora.errors import WanloraError
from wanlora.recipes.schema import SchedulerSettings
from wanlora.train.schedule import make_scheduler
from wanlora.train.state import (
    TrainState,
    latest_state_dir,
    load_state,
    read_trainer_state,
    save_state,
)

TOTAL_STEPS = 12
SAVED_AT = 5
SHAPES = {"a.lora_down.weight": (4, 6), "a.lora_up.weight": (6, 4), "b.alpha": ()}


class Trainer:
    """A few LoRA-shaped parameters trained like the loop does (noise from the generator,
    loss scaled by the GradScaler, one AdamW + scheduler step per step)."""

    def __init__(self, scaler_enabled: bool, tensors: dict[str, torch.Tensor] | None = None):
        init = tensors or {
            k: torch.randn(s, generator=torch.Generator().manual_seed(1)) for k, s in SHAPES.items()
        }
        self.params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
        trained = [p for k, p in self.params.items() if k != "b.alpha"]  # one with no state
        self.optimizer = torch.optim.AdamW(
            [{"params": trained}, {"params": [self.params["b.alpha"]], "lr": 3e-3}],
            lr=1e-2,
            betas=(0.9, 0.99),
            weight_decay=0.01,
            fused=False,
        )
        settings = SchedulerSettings(lr_scheduler_power=2.0, lr_warmup_steps=3, lr_end=1e-5)
        self.scheduler = make_scheduler(self.optimizer, settings, TOTAL_STEPS)
        # growth every 2 good steps, so the scale and growth tracker move across the save
        self.scaler = torch.amp.GradScaler("cpu", enabled=scaler_enabled, growth_interval=2)
        self.generator = torch.Generator("cpu").manual_seed(7)

    def step(self) -> dict:
        noise = torch.randn(4, 6, generator=self.generator)
        drop = torch.rand((), generator=self.generator)
        p = self.params
        loss = (
            (p["a.lora_down.weight"] @ p["a.lora_up.weight"] @ p["a.lora_down.weight"] - noise) ** 2
        ).mean() * (1 + drop)
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {
            "lr": [g["lr"] for g in self.optimizer.param_groups],
            "scale": self.scaler.get_scale(),
            "params": {k: v.detach().clone() for k, v in p.items()},
            "torch": torch.rand(3),
            "numpy": np.random.rand(3),
            "random": random.random(),
            "gauss": (np.random.randn(), random.gauss(0, 1)),  # numpy/Python's cached gaussians
        }

    def save(self, out: Path, step: int) -> Path:
        lora = {k: v.detach().clone() for k, v in self.params.items()}
        meta = TrainState(step, 0, step, False, "dataset", "recipe")
        return save_state(
            out, "high", meta, lora, self.optimizer, self.scheduler, self.scaler, self.generator
        )


def same(a: dict, b: dict) -> None:
    assert a["lr"] == b["lr"] and a["scale"] == b["scale"] and a["random"] == b["random"]
    assert a["gauss"] == b["gauss"]
    assert np.array_equal(a["numpy"], b["numpy"]) and torch.equal(a["torch"], b["torch"])
    for key in a["params"]:
        assert torch.equal(a["params"][key], b["params"][key]), key


def seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.parametrize("scaler_enabled", [True, False])
def test_a_loaded_state_continues_bit_for_bit(tmp_path, scaler_enabled):
    seed_globals(0)
    original = Trainer(scaler_enabled)
    for _ in range(SAVED_AT):
        original.step()
    np.random.randn(), random.gauss(0, 1)  # leave a cached gaussian in both RNGs
    state_dir = original.save(tmp_path, SAVED_AT)
    continued = [original.step() for _ in range(TOTAL_STEPS - SAVED_AT)]

    seed_globals(123)  # fresh objects, every RNG somewhere else
    fresh = Trainer(scaler_enabled, tensors={k: torch.zeros(s) for k, s in SHAPES.items()})
    meta, lora = load_state(
        state_dir, fresh.optimizer, fresh.scheduler, fresh.scaler, fresh.generator
    )
    assert meta == TrainState(SAVED_AT, 0, SAVED_AT, False, "dataset", "recipe")
    with torch.no_grad():
        for key, param in fresh.params.items():
            param.copy_(lora[key])
    resumed = [fresh.step() for _ in range(TOTAL_STEPS - SAVED_AT)]
    for a, b in zip(continued, resumed, strict=True):
        same(a, b)
    if scaler_enabled:
        assert continued[-1]["scale"] != 65536.0  # the scale really moved after the save


def test_the_state_is_safetensors_and_json(tmp_path):
    seed_globals(0)
    trainer = Trainer(scaler_enabled=True)
    for _ in range(2):
        trainer.step()
    state_dir = trainer.save(tmp_path, 2)
    assert state_dir == latest_state_dir(tmp_path, "high")
    assert {p.name for p in state_dir.iterdir()} == {
        "lora.safetensors",
        "trainer.safetensors",
        "trainer.json",
        "meta.json",
    }
    data = json.loads((state_dir / "trainer.json").read_text(encoding="utf-8"))
    assert data["format"] == 1
    assert data["optimizer"]["param_groups"][0]["betas"] == {"$tuple": [0.9, 0.99]}
    adam = data["optimizer"]["state"]["$int_keys"]["0"]
    assert adam["exp_avg"] == {"$tensor": "optimizer.state.0.exp_avg"}
    assert "2" not in data["optimizer"]["state"]["$int_keys"]  # b.alpha has no grad, no state
    assert data["scaler"]["scale"] == trainer.scaler.get_scale()
    assert data["scheduler"]["last_epoch"] == 2
    assert data["numpy_rng"]["bit_generator"] == "MT19937"
    with safe_open(state_dir / "trainer.safetensors", "pt") as f:
        names = set(f.keys())
    assert {"generator", "torch_rng", "numpy_rng.key", "optimizer.state.1.exp_avg_sq"} <= names
    # the reader gives back what the objects' own state_dict()/get_state() give
    back = read_trainer_state(state_dir)
    saved = trainer.optimizer.state_dict()
    assert back["optimizer"]["param_groups"] == saved["param_groups"]
    assert torch.equal(back["optimizer"]["state"][1]["exp_avg"], saved["state"][1]["exp_avg"])
    assert back["scheduler"] == trainer.scheduler.state_dict()
    assert torch.equal(back["generator"], trainer.generator.get_state())


def test_reading_a_state_never_unpickles(tmp_path, monkeypatch):
    seed_globals(0)
    trainer = Trainer(scaler_enabled=False)
    trainer.step()
    state_dir = trainer.save(tmp_path, 1)

    def refuse(*args, **kwargs):
        raise AssertionError("a state was read through pickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    fresh = Trainer(scaler_enabled=False)
    load_state(state_dir, fresh.optimizer, fresh.scheduler, fresh.scaler, fresh.generator)
    assert fresh.scheduler.last_epoch == 1


class RunsCode:
    """Unpickling this calls os.system: what a planted trainer.pt could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("keep_new_files", [False, True])
def test_a_planted_pickle_is_refused_unread(tmp_path, keep_new_files):
    seed_globals(0)
    trainer = Trainer(scaler_enabled=False)
    trainer.step()
    state_dir = trainer.save(tmp_path / "output", 1)
    # the payload is live: unpickled elsewhere, it does create its marker
    probe = tmp_path / "probe"
    torch.save({"optimizer": RunsCode(probe)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists()

    marker = tmp_path / "ran"
    if not keep_new_files:  # an earlier version's state: trainer.pt instead of the new pair
        (state_dir / "trainer.safetensors").unlink()
        (state_dir / "trainer.json").unlink()
    torch.save({"optimizer": RunsCode(marker)}, state_dir / "trainer.pt")
    fresh = Trainer(scaler_enabled=False)
    with pytest.raises(WanloraError) as info:
        load_state(state_dir, fresh.optimizer, fresh.scheduler, fresh.scaler, fresh.generator)
    assert str(info.value) == (
        f"{state_dir}: resume state is in an older, unsafe format (trainer.pt, a pickle "
        "that could run code); it is not read -- train with --new-run (or delete the "
        "folder) to start over"
    )
    with pytest.raises(WanloraError, match="unsafe format"):
        read_trainer_state(state_dir)
    assert not marker.exists()
    assert fresh.scheduler.last_epoch == 0  # nothing was loaded


def tamper_json(text: str) -> str:
    return text[: len(text) // 2]  # cut half-way


def tamper_tensor_name(text: str) -> str:
    return text.replace('"$tensor": "generator"', '"$tensor": "not-there"')


def tamper_tag(text: str) -> str:
    return text.replace('"$tuple"', '"$set"', 1)


def tamper_structure(text: str) -> str:
    data = json.loads(text)
    data["optimizer"]["param_groups"] = "all"
    return json.dumps(data)


def tamper_format(text: str) -> str:
    return text.replace('"format": 1', '"format": 99')


def drop_part(text: str) -> str:
    data = json.loads(text)
    del data["python_rng"]
    return json.dumps(data)


@pytest.mark.parametrize(
    "name, tamper",
    [
        ("trainer.json", tamper_json),
        ("trainer.json", tamper_tensor_name),
        ("trainer.json", tamper_tag),
        ("trainer.json", tamper_structure),
        ("trainer.json", tamper_format),
        ("trainer.json", drop_part),
        ("trainer.safetensors", lambda b: b[: len(b) // 2]),  # truncated
        ("trainer.safetensors", lambda b: b"\xff" * len(b)),  # garbage header
        ("trainer.safetensors", None),  # missing
    ],
)
def test_a_malformed_state_is_unreadable(tmp_path, name, tamper):
    seed_globals(0)
    trainer = Trainer(scaler_enabled=True)
    trainer.step()
    state_dir = trainer.save(tmp_path, 1)
    path = state_dir / name
    if tamper is None:
        path.unlink()
    elif name.endswith(".json"):
        path.write_text(tamper(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        path.write_bytes(tamper(path.read_bytes()))
    fresh = Trainer(scaler_enabled=True)
    with pytest.raises(WanloraError) as info:
        load_state(state_dir, fresh.optimizer, fresh.scheduler, fresh.scaler, fresh.generator)
    assert str(info.value).startswith(f"{state_dir}: resume state is unreadable (")
    assert str(info.value).endswith(
        "delete this folder to resume from the previous state, or train with --new-run"
    )


def test_a_tensor_the_json_does_not_name_is_unreadable(tmp_path):
    seed_globals(0)
    trainer = Trainer(scaler_enabled=False)
    trainer.step()
    state_dir = trainer.save(tmp_path, 1)
    tensors = load_file(state_dir / "trainer.safetensors")
    save_file({**tensors, "extra": torch.zeros(1)}, state_dir / "trainer.safetensors")
    with pytest.raises(WanloraError, match="unreadable"):
        read_trainer_state(state_dir)
