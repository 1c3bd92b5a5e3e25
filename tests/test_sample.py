"""Two-expert sampling on CPU with the tiny demo models: pixels are meaningless, plumbing real."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.recipes import load_project
from wanlora.sampling.sample import read_png_info, sample_project, save_png

CPU = torch.device("cpu")
PROMPTS = ["flat demo shapes, a red circle on a blue background", "a green square"]


def write_lora(project, expert: str, seed: int) -> None:
    """A LoRA file for `expert` with random (non-zero) weights, as training would save it."""
    from wanlora.lora.file import save_lora_file
    from wanlora.lora.inject import add_lora, lora_parameters, lora_state_dict
    from wanlora.models import load_dit
    from wanlora.outputs import lora_path
    from wanlora.sampling.sample import dit_path

    model, _ = load_dit(dit_path(project, expert), dtype=torch.float32)
    add_lora(model, project.config.lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lora_parameters(model):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    tensors = lora_state_dict(model, project.config.lora.network_alpha)
    save_lora_file(lora_path(project, expert), tensors, {"modelspec.title": expert})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = create_demo_project(tmp_path_factory.mktemp("sample") / "demo", epochs=1)
    write_lora(project, "high", 1)
    write_lora(project, "low", 2)
    return project


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_both_experts_run_on_their_side_of_the_boundary_and_compare(project):
    result = sample_project(
        project, PROMPTS, seeds=[3], steps=3, compare=True, device=CPU, guidance_scale=1.0
    )
    boundary = project.config.boundary * 1000
    high = [t for name, t in result.timesteps_seen if name == "high"]
    low = [t for name, t in result.timesteps_seen if name == "low"]
    assert high and low, result.timesteps_seen
    assert min(high) >= boundary > max(low)
    # two renders (LoRA, then base), each: every step uses exactly one expert
    assert len(high) + len(low) == 2 * 3
    assert not result.offloaded and result.residency_events == []

    # files: one per prompt x seed, names carry prompt index, seed and strengths
    names = [p.name for p in result.images]
    assert names == ["p00_seed3_high1_low1.png", "p01_seed3_high1_low1.png"]
    assert [p.name for p in result.base_images] == ["p00_seed3_base.png", "p01_seed3_base.png"]
    assert result.grid is not None and result.grid.name == "compare_seed3_high1_low1.png"
    info = read_png_info(result.images[1])
    assert info["prompt"] == PROMPTS[1] and info["seed"] == 3
    assert info["strengths"] == {"high": 1.0, "low": 1.0}
    assert Image.open(result.images[0]).size == (64, 64)
    grid = Image.open(result.grid)
    assert grid.width > 2 * 34 and grid.height > 2 * 34

    # the LoRA changes the picture
    assert np.abs(pixels(result.images[0]) - pixels(result.base_images[0])).max() > 0

    # strength 0 (no LoRA at all) == the compare pass (LoRA attached, multiplier 0)
    plain = sample_project(  # same batch as above: the same arithmetic
        project,
        PROMPTS,
        seeds=[3],
        steps=3,
        strengths={"high": 0.0, "low": 0.0},
        device=CPU,
        guidance_scale=1.0,
    )
    assert np.array_equal(pixels(plain.images[0]), pixels(result.base_images[0]))

    # the same name again: versioned, never overwritten
    again = save_png(Image.new("RGB", (16, 16)), plain.images[0].parent, "p00_seed3_high0_low0", {})
    assert again.name == "p00_seed3_high0_low0_v2.png"
    assert np.array_equal(pixels(plain.images[0]), pixels(result.base_images[0]))
    assert read_png_info(again) == {}
    assert sorted(p.name for p in again.parent.iterdir() if p.name.startswith(".")) == []


def test_strength_scales_each_expert_and_offload_swaps_experts(project):
    full = sample_project(project, PROMPTS[:1], seeds=[7], steps=3, device=CPU)
    half_low = sample_project(
        project,
        PROMPTS[:1],
        seeds=[7],
        steps=3,
        strengths={"low": 0.5},
        device=CPU,
        offload=True,
    )
    assert half_low.images[0].name == "p00_seed7_high1_low0.5.png"
    assert not np.array_equal(pixels(full.images[0]), pixels(half_low.images[0]))
    # the offload path: the inactive expert leaves the device at the switch, once per image
    assert half_low.offloaded
    assert half_low.residency_events == [("offload", "high"), ("load", "low")]
    order = [name for name, _ in half_low.timesteps_seen]
    assert order == sorted(order, key=lambda n: n != "high")  # all high, then all low


def test_missing_lora_is_a_clear_error(tmp_path):
    project = create_demo_project(tmp_path / "demo", epochs=1)
    with pytest.raises(WanloraError, match="no trained LoRA for the high expert"):
        sample_project(project, PROMPTS, device=CPU)
    with pytest.raises(WanloraError, match="multiple of 16"):
        sample_project(project, PROMPTS, width=50, device=CPU, strengths={"high": 0, "low": 0})


def test_training_monitor_samples_the_expert_being_trained(project):
    from wanlora.models import load_dit
    from wanlora.outputs import lora_path
    from wanlora.report import read_scalars
    from wanlora.sampling.epoch_samples import TrainingMonitor
    from wanlora.sampling.sample import attach_lora, dit_path

    project.config.sample.every_n_epochs = 2
    project.config.sample.steps = 3
    try:
        model, _ = load_dit(dit_path(project, "low"), dtype=torch.float16)
        attach_lora(model, lora_path(project, "low"))
        model.train()
        monitor = TrainingMonitor(project, CPU)
        monitor("low", 1, model)  # not due: memory numbers only
        assert monitor.saved == []
        monitor("low", 2, model)
        assert list(monitor._base) == ["high"]  # the other phase: the high expert's base model
        monitor.close()
    finally:
        project.config.sample.every_n_epochs = None
    assert [p.name for p in monitor.saved] == ["train_low_e0002_p00_seed42.png"]
    info = read_png_info(monitor.saved[0])
    assert info["kind"] == "training" and info["expert"] == "low" and info["epoch"] == 2
    assert info["strengths"] == {"high": 0.0, "low": 1.0}
    assert model.training and next(model.parameters()).device == CPU  # handed back as it was
    scalars = read_scalars(project.output_dir / "logs" / "low")
    assert scalars["perf/peak_rss_gib"].steps == [1, 2]
    assert scalars["perf/sample_seconds"].steps == [2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(project.output_dir / "logs" / "low"))
    events.Reload()
    assert events.Tags()["images"] == ["samples/p00"]


def test_one_expert_recipe_wan21(tmp_path):
    demo = create_demo_project(tmp_path / "demo", epochs=1)
    text = demo.config_file.read_text(encoding="utf-8")
    high = re.search(r'\[experts\.high\]\ndit = "([^"]+)"', text).group(1)
    text = re.sub(r"\[experts\.high\].*?(?=\[sample\])", "", text, flags=re.S)
    text = text.replace('recipe = "wan22-t2v"', 'recipe = "wan21-t2v"')
    text = text.replace("[sample]", f'[experts.main]\ndit = "{high}"\n\n[sample]')
    demo.config_file.write_text(text, encoding="utf-8")
    project = load_project(demo.root)
    assert list(project.config.experts) == ["main"] and project.config.boundary is None
    write_lora(project, "main", 3)
    result = sample_project(
        project, PROMPTS[:1], seeds=[1], steps=3, compare=True, device=CPU, guidance_scale=1.0
    )
    assert {name for name, _ in result.timesteps_seen} == {"main"}
    assert len(result.timesteps_seen) == 2 * 3
    assert [p.name for p in result.images] == ["p00_seed1_main1.png"]
    assert result.grid.name == "compare_seed1_main1.png"
    assert not np.array_equal(pixels(result.images[0]), pixels(result.base_images[0]))


def test_cli_sample_and_report(project):
    from typer.testing import CliRunner

    from wanlora.cli import app

    runner = CliRunner()
    args = ["sample", str(project.root), "-p", "a yellow triangle", "--seed", "11", "--steps", "3"]
    args += ["--size", "64x48", "--high-strength", "0.5", "--guidance", "1", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    path = project.output_dir / "samples" / "p00_seed11_high0.5_low1.png"
    assert path.exists() and Image.open(path).size == (64, 48)
    bad = runner.invoke(app, ["sample", str(project.root), "--size", "64", "--device", "cpu"])
    assert isinstance(bad.exception, WanloraError) and "WIDTHxHEIGHT" in str(bad.exception)
    report = runner.invoke(app, ["report", str(project.root)])
    assert report.exit_code == 0, report.output
    page = (project.output_dir / "report.html").read_text(encoding="utf-8")
    assert "a yellow triangle" in page
