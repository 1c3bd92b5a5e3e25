"""Validation loss, LoRA-effect check and verdict on the tiny demo models (CPU)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from wanlora.cache.build import build_cache, load_cached_tensors
from wanlora.dataset.items import load_items
from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.lora.file import read_lora_file
from wanlora.models.dit import load_dit
from wanlora.models.text_encoder import pad_context
from wanlora.outputs import OutputLayout
from wanlora.recipes import load_project, load_recipe
from wanlora.run.experts import prepare_data
from wanlora.run.training import run_training
from wanlora.run.validation import ValidationMonitor, read_points, verdict_lines, write_points
from wanlora.train.callbacks import StepReport
from wanlora.train.setup import expert_dit, load_expert_model
from wanlora.train.validation import Validator, build_validation_set, spread
from wanlora.train.verdict import expert_verdict

CPU = torch.device("cpu")
KEEP = 5  # images of the demo's 18 kept: 5 steps an epoch


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid") / "project"
    create_demo_project(root, epochs=1)
    for image in sorted((root / "dataset").glob("*.png"))[KEEP:]:
        image.unlink()
        image.with_suffix(".txt").unlink()
    add_validation(root, "timesteps = 2")
    prepare_data(load_project(root), CPU)  # the cache, shared by the copies
    return root


@pytest.fixture
def project_dir(small_demo, tmp_path):
    target = tmp_path / "project"
    shutil.copytree(small_demo, target)
    return target


def add_validation(root, line: str) -> None:
    text = (root / "wanlora.toml").read_text(encoding="utf-8")
    (root / "wanlora.toml").write_text(text.replace("[validation]\n", f"[validation]\n{line}\n"))


def test_step_0_is_the_base_models_loss_and_points_are_deterministic(small_demo):
    project = load_project(small_demo)
    data = prepare_data(project, CPU)
    settings = project.config.experts["high"]
    model, dtype = load_expert_model(project, "high", project.config, CPU)  # LoRA B = 0
    validator = Validator(build_validation_set(data.samples, settings, 2, seed=7), CPU, dtype)
    base = validator.base_point(model)
    again = Validator(build_validation_set(data.samples, settings, 2, seed=7), CPU, dtype)
    assert again.base_point(model) == base  # same set, same numbers, bit for bit
    assert validator.point(model).effect < 1e-7  # a zero LoRA changes nothing
    assert model.training  # its mode is given back

    # the base model's loss, directly: the plain DiT (no LoRA) with fp8-rounded weights as
    # the recipe trains it (fp8_base), on the documented inputs
    path = expert_dit(project, "high", project.config)[0]
    plain, _ = load_dit(path, dtype=dtype, device=CPU, fp8_round=True)
    generator = torch.Generator().manual_seed(7)
    timesteps = [906, 969]  # the midpoints of two halves of 875-1000
    losses = []
    for k, (latent, text) in enumerate(data.samples):  # 5 items >= 2 timesteps: one pair each
        x = latent.float()[None]
        noise = torch.randn(x.shape, generator=generator)
        t = torch.tensor([timesteps[k % 2] / 1000.0])
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            prediction = plain(
                hidden_states=((1 - t) * x + t * noise).to(dtype),
                timestep=t * 1000 + 1,
                encoder_hidden_states=pad_context(text).float()[None],
                return_dict=False,
            )[0]
        losses.append(F.mse_loss(prediction.float(), noise - x).item())
    assert base.loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def train_high(root) -> None:
    run_training(load_project(root), experts=["high"], device=CPU, overwrite=True, restart=True)


def state_files(root) -> dict[str, bytes]:
    state = root / "output" / "state" / "high"
    return {p.relative_to(state).as_posix(): p.read_bytes() for p in state.rglob("*.*")}


def test_validation_changes_nothing_trained_and_sees_the_lora_move(project_dir, tmp_path):
    off = tmp_path / "off"
    shutil.copytree(project_dir, off)
    add_validation(off, "enabled = false")
    train_high(project_dir)
    train_high(off)

    layout = OutputLayout.of(load_project(project_dir))
    on_tensors, on_meta = read_lora_file(layout.lora("high"))
    off_tensors, off_meta = read_lora_file(OutputLayout.of(load_project(off)).lora("high"))
    assert on_tensors.keys() == off_tensors.keys()
    for key in on_tensors:  # the same LoRA, byte for byte
        assert on_tensors[key].numpy().tobytes() == off_tensors[key].numpy().tobytes(), key
    clock = ("ss_training_started_at", "ss_training_finished_at", "modelspec.date")
    assert {k: v for k, v in on_meta.items() if k not in clock} == {
        k: v for k, v in off_meta.items() if k not in clock
    }
    assert state_files(project_dir) == state_files(off)  # optimiser, RNG streams, step

    points = read_points(layout.validation_log("high"))
    assert [(p["step"], p["epoch"]) for p in points] == [(0, 0), (5, 1)]
    assert points[0]["effect"] == 0.0 and points[1]["effect"] > 0  # trained: it moved
    assert points[0]["timesteps"] == [906, 969] and points[0]["items"] == KEEP
    assert all(p["seconds"] >= 0 for p in points)
    assert not OutputLayout.of(load_project(off)).validation_log("high").exists()

    verdict = json.loads(layout.verdict.read_text())["experts"]["high"]
    assert verdict["effect"] == points[1]["effect"]
    assert verdict["level"] in ("none", "weak") and "only 5 optimiser steps" in verdict["causes"][0]
    assert verdict_lines(load_project(project_dir))[0].startswith("high: high-noise LoRA")
    assert not OutputLayout.of(load_project(off)).verdict.exists()


def test_held_out_items_are_validated_on_and_never_trained(project_dir):
    add_validation(project_dir, 'items = ["demo_00"]')
    project = load_project(project_dir)
    data = prepare_data(project, CPU)
    assert [i.name for i in data.held_out] == ["demo_00"]
    assert "demo_00" not in [i.name for i in data.items] and len(data.items) == KEEP - 1
    items = load_items(project)
    entries = build_cache(project, items=items, device=CPU).entries
    first = [i.name for i in items].index("demo_00")
    latent, text = load_cached_tensors([entries[first]])[0]
    assert torch.equal(data.held_out_samples[0][0], latent)
    assert torch.equal(data.held_out_samples[0][1], text)
    train_high(project_dir)
    layout = OutputLayout.of(project)
    _, meta = read_lora_file(layout.lora("high"))
    assert meta["ss_steps"] == str(KEEP - 1)
    points = read_points(layout.validation_log("high"))
    assert [p["step"] for p in points] == [0, KEEP - 1] and points[-1]["items"] == 1
    assert "held-out loss" in layout.verdict.read_text()

    toml = project_dir / "wanlora.toml"
    toml.write_text(toml.read_text().replace('"demo_00"', '"demo_99"'))
    with pytest.raises(WanloraError, match=r"\[validation\] items names 'demo_99'"):
        prepare_data(load_project(project_dir), CPU)


def test_at_most_max_items_are_validated_on_spread_over_the_dataset():
    assert spread(18, 6) == [0, 3, 6, 9, 12, 15] and spread(5, 32) == [0, 1, 2, 3, 4]
    samples = [(torch.full((16, 1, 2, 2), float(i)), torch.zeros(3, 8)) for i in range(18)]
    vset = build_validation_set(samples, load_recipe("wan22-t2v").experts["low"], 4, 0, 6)
    assert [s[0][0, 0, 0, 0].item() for s in vset.samples] == [0, 3, 6, 9, 12, 15]
    assert vset.timesteps == [109, 328, 547, 766] and len(vset.pairs) == 6


def points(effect: float, steps: int, base_loss: float = 0.5, loss: float = 0.49) -> list[dict]:
    common = {"expert": "high", "timesteps": [891, 922, 953, 984], "items": 18, "seconds": 1.0}
    return [
        {**common, "step": 0, "epoch": 0, "loss": base_loss, "effect": 0.0},
        {**common, "step": steps, "epoch": 100, "loss": loss, "effect": effect},
    ]


def test_verdict_weak_and_clear():
    config = load_recipe("wan22-t2v")
    weak = expert_verdict(config, "high", points(0.003, 54))
    assert weak.level == "weak" and weak.effect == 0.003
    assert weak.text.startswith("high-noise LoRA changes the prediction by 0.3% (weak): it will")
    assert "look much like the base model" in weak.text and "-2.0%" in weak.text
    assert weak.causes[0].startswith("only 54 optimiser steps")
    assert "below 10% of 0.0003 from step 14 of 54" in weak.causes[1]  # power 8 decays early
    assert "lr_scheduler_power" in weak.text

    clear = expert_verdict(config, "low", points(0.05, 1800))
    assert clear.level == "clear" and clear.causes == []
    assert clear.text.startswith("low-noise LoRA changes the prediction by 5% (clear): it moves")

    assert expert_verdict(config, "high", points(0.0002, 1800)).level == "none"
    config.experts["high"].min_timestep = 0  # trained where it never runs
    outside = expert_verdict(config, "high", points(0.05, 1800), sample_strengths=[0.0])
    assert "trained at timesteps 0-1000 but runs at 875-1000" in outside.causes[0]
    assert "strengths are all 0" in outside.causes[1] and "But it trained" in outside.text
    assert expert_verdict(config, "high", points(0.05, 0)[:1]) is None  # no trained point


def test_a_resume_keeps_the_points_before_it_and_a_fresh_run_starts_over(project_dir):
    project = load_project(project_dir)
    data = prepare_data(project, CPU)
    log = OutputLayout.of(project).validation_log("high")
    write_points(log, points(0.01, 5) + [{**points(0.02, 10)[1], "epoch": 2}])
    resumed = ValidationMonitor(project, "high", data, CPU, fresh=False)
    resumed.on_step(StepReport("high", 8, 10, 0.5, 1e-4, 0.1))  # resumed from step 7
    assert [p["step"] for p in read_points(log)] == [0, 5]
    assert resumed.every == 1 and resumed.due(1)  # 1 epoch: max(1, 1 // 10)
    fresh = ValidationMonitor(project, "high", data, CPU, fresh=True)
    fresh.on_step(StepReport("high", 1, 10, 0.5, 1e-4, 0.1))
    assert read_points(log) == []
