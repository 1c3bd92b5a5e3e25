"""I2V-A14B around training: samples from a first frame, the demo, init, export musubi."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

from cli_run import run_cli
from demo_output import I2V_DEMO, assert_the_tutorial_shows_this_run
from video_files import write_h264
from wanlora.demo_i2v import I2V_START_IMAGE, create_i2v_demo_project
from wanlora.errors import WanloraError
from wanlora.export.musubi import musubi_export
from wanlora.project_init import init_project
from wanlora.recipes import load_project
from wanlora.recipes.project import tomllib
from wanlora.sampling.i2v import start_image
from wanlora.sampling.sample import read_png_info, sample_project

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2v-sample") / "project"
    create_i2v_demo_project(root, epochs=1)
    return root


def video_frames(path: Path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_a_sample_is_a_video_from_the_image_with_experts_switched_at_900(demo):
    project = load_project(demo)
    seen = []

    def record(module, args):  # the patch embedding of whichever expert runs
        if isinstance(module, torch.nn.Conv3d) and module.kernel_size == (1, 2, 2):
            seen.append(args[0].shape[1])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = sample_project(
            project,
            ["flat demo shapes, a red circle slides from left to right"],
            steps=6,
            strengths={"high": 0.0, "low": 0.0},  # the base experts: no LoRA trained here
            device=CPU,
        )
    finally:
        handle.remove()
    (png,) = result.images
    (video,) = result.videos
    assert video == png.with_suffix(".mp4")  # beside the PNG of its first frame
    frames = video_frames(video)
    assert len(frames) == 5 and frames[0].shape == (32, 48, 3)  # [sample] frames, size
    with Image.open(png) as first:
        assert first.size == (48, 32)
    info = read_png_info(png)
    assert info["frames"] == 5 and info["image"] == I2V_START_IMAGE and info["boundary"] == 0.9
    assert set(seen) == {36}  # noisy latent 16 + mask 4 + y 16
    experts = [(name, t) for name, t in result.timesteps_seen]
    assert {name for name, _ in experts} == {"high", "low"}
    assert all(t >= 900 for name, t in experts if name == "high")
    assert all(t < 900 for name, t in experts if name == "low")


def test_the_first_frame_is_required_and_only_for_i2v(demo, tmp_path):
    project = load_project(demo)
    text = project.config_file.read_text().replace(f'image = "{I2V_START_IMAGE}"\n', "")
    bare = tmp_path / "bare"
    shutil.copytree(demo, bare, ignore=shutil.ignore_patterns("models", "dataset"))
    (bare / "wanlora.toml").write_text(text)
    with pytest.raises(WanloraError, match="renders videos from a first frame") as error:
        start_image(load_project(bare), None, 48, 32)
    assert "--image PATH" in str(error.value)
    with pytest.raises(WanloraError, match="does not exist"):
        start_image(load_project(bare), tmp_path / "missing.png", 48, 32)
    t2v = init_project(tmp_path / "t2v", "wan22-t2v", "N", "me")
    with pytest.raises(WanloraError, match="renders from text only"):
        start_image(t2v, demo / I2V_START_IMAGE, 48, 32)
    # an image of another size is resized and centre-cropped like a training frame
    Image.new("RGB", (100, 40), (200, 10, 10)).save(tmp_path / "wide.png")
    image = start_image(project, tmp_path / "wide.png", 48, 32)
    assert image.size == (48, 32) and image.getpixel((24, 16)) == (200, 10, 10)


def test_demo_i2v_runs_end_to_end_then_samples_from_the_cli(tmp_path):
    root = tmp_path / "wanlora-demo-i2v"  # the tutorial's name: its output block is this run's
    r = run_cli("demo", str(root), "--recipe", "wan22-i2v", "--epochs", "1", timeout=900)
    assert r.returncode == 0, r.stderr
    assert_the_tutorial_shows_this_run(r, tmp_path, I2V_DEMO)
    out = " ".join(r.stdout.split())
    assert "4 generated videos" in out and "Your two LoRAs" in out
    # the tutorial's log line (the log goes to stderr when piped)
    assert "encoding 8 I2V first-frame conditioning(s) with the VAE" in r.stderr
    assert "timesteps 900-1000" in out and "timesteps 0-900" in out
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert f"wanlora sample {root}" in lines
    r = run_cli(
        "sample",
        str(root),
        "--image",
        str(root / I2V_START_IMAGE),
        "--steps",
        "2",
        "--device",
        "cpu",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("sample: ")]
    assert [Path(ln).suffix for ln in lines] == [".png", ".mp4"]  # the first frame, the video
    assert len(video_frames(Path(lines[1][len("sample: ") :]))) == 5
    # the tutorial shows this command's output (its paths relative to the demo's parent)
    tutorial = (Path(__file__).parents[1] / "docs" / "tutorial.md").read_text(encoding="utf-8")
    shown = [ln for ln in tutorial.splitlines() if ln.startswith("sample: wanlora-demo-i2v/")]
    assert [ln.replace(f"{tmp_path}/", "") for ln in lines] == shown


def test_init_and_export_musubi_for_i2v(tmp_path):
    project = init_project(tmp_path / "p", "wan22-i2v", "N", "me")
    write_h264(project.dataset_dir / "walk.mp4", 10)
    (project.dataset_dir / "walk.txt").write_text("a walk")
    export = musubi_export(load_project(project.root))
    cache_latents, cache_text, high, low = export.commands
    assert "--i2v" in cache_latents and "--i2v" not in cache_text
    for command, (lo, hi), noise in ((high, (900, 1000), "high"), (low, (0, 900), "low")):
        assert command[command.index("--task") + 1] == "i2v-A14B"
        assert command[command.index("--min_timestep") + 1] == str(lo)
        assert command[command.index("--max_timestep") + 1] == str(hi)
        dit = command[command.index("--dit") + 1]
        assert dit.endswith(f"wan2.2_i2v_{noise}_noise_14B_fp16.safetensors")
        assert command[command.index("--vae") + 1].endswith("wan_2.1_vae.safetensors")
    (videos,) = tomllib.loads(export.dataset_toml)["datasets"]
    assert videos["target_frames"] == [81] and videos["video_directory"] == str(project.dataset_dir)
