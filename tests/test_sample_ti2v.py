"""TI2V-5B sampling on the tiny models: text-to-video, image-to-video (first latent frame
fixed to the image, its tokens at t = 0 on every step), `wanlora sample`, epoch samples."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from cli_run import run_cli
from wanlora.demo_ti2v import create_ti2v_demo_project
from wanlora.errors import WanloraError
from wanlora.lora.inject import add_lora
from wanlora.models import load_dit, load_vae
from wanlora.recipes import load_project
from wanlora.sampling.epoch_samples import TrainingMonitor
from wanlora.sampling.files import read_video_info
from wanlora.sampling.sample import encode_prompts, read_png_info
from wanlora.sampling.ti2v import Ti2vSpec, fit_image, render_ti2v
from wanlora.sampling.ti2v_sample import sample_ti2v_project

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return create_ti2v_demo_project(tmp_path_factory.mktemp("ti2v") / "demo", epochs=1)


@pytest.fixture(scope="module")
def models(project):
    config = project.config
    dit, _ = load_dit(project.root / config.experts["main"].dit, dtype=torch.float32, task="ti2v")
    vae = load_vae(project.root / config.models.vae, dtype=torch.float32, kind="wan2.2")
    contexts = encode_prompts(project, ["a red circle", "a blue square"], CPU)
    return dit, vae, contexts


def spec(contexts, seeds, image=None, frames=5):
    return Ti2vSpec(
        contexts=contexts,
        seeds=seeds,
        negative=contexts[-1],
        steps=2,
        width=64,
        height=64,
        frames=frames,
        guidance_scale=5.0,
        shift=5.0,
        image=image,
    )


def test_text_to_video_gives_every_token_the_steps_t(models):
    dit, vae, contexts = models
    s = spec(contexts[:1], [1])
    (video,) = render_ti2v(dit, vae, s, device=CPU, dtype=torch.float32)
    assert video.shape == (5, 64, 64, 3) and video.dtype == np.uint8
    assert len(s.timesteps_seen) == 2  # one per step
    assert all(first == last > 0 for first, last in s.timesteps_seen)


def test_image_to_video_holds_the_image_as_the_first_frame(models, project):
    dit, vae, contexts = models
    image = fit_image(project.root / "dataset" / "demo_04.png", 64, 64)  # 90x160, cropped
    assert image.shape == (64, 64, 3)
    s = spec(contexts[:1] * 2, [1, 2], image=image)
    a, b = render_ti2v(dit, vae, s, device=CPU, dtype=torch.float32)
    assert all(first == 0 and last > 0 for first, last in s.timesteps_seen)
    # latent frame 0 is the image's on every step, and the causal decoder makes pixel frame 0
    # from it alone: two seeds share frame 0 and differ after it
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1:], b[1:])
    (t2v,) = render_ti2v(dit, vae, spec(contexts[:1], [1]), device=CPU, dtype=torch.float32)
    assert not np.array_equal(t2v[0], a[0])


def test_sample_writes_an_mp4_from_the_image_and_a_png_at_one_frame(project, tmp_path):
    result = sample_ti2v_project(
        project,
        ["a red circle"],
        image="dataset/demo_00.png",  # relative to the project, as [sample] image
        strengths={"main": 0.0},
        steps=2,
        device=CPU,
        out_dir=tmp_path,
    )
    (path,) = result.images
    assert path.name == "p00_seed42_main0.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == 24.0
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)
    info = read_video_info(path)
    assert info["mode"] == "image-to-video" and info["image"].endswith("demo_00.png")
    assert info["frames"] == 9 and info["recipe"] == "wan22-ti2v-5b"

    still = sample_ti2v_project(
        project, ["a red circle"], strengths={"main": 0.0}, steps=2, frames=1, device=CPU,
        out_dir=tmp_path,
    )
    (png,) = still.images
    assert png.suffix == ".png" and read_png_info(png)["frames"] == 1
    assert read_png_info(png)["mode"] == "text-to-video"  # no image: [sample] image unset


def test_sample_sizes_must_be_multiples_of_32(project, tmp_path):
    with pytest.raises(WanloraError, match="multiples of 32"):
        sample_ti2v_project(project, ["x"], width=48, strengths={"main": 0.0}, out_dir=tmp_path)
    with pytest.raises(WanloraError, match="no trained LoRA"):
        sample_ti2v_project(project, ["x"], out_dir=tmp_path)


def test_wanlora_sample_text_to_video_from_the_cli(project):
    text = (project.root / "wanlora.toml").read_text()
    result = run_cli(
        "sample", str(project.root), "--strength", "0", "--steps", "2", "--frames", "5",
        "--device", "cpu", "-p", "a circle moving",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "p00_seed42_main0" in result.stdout and ".mp4" in result.stdout
    assert (project.root / "wanlora.toml").read_text() == text


def test_epoch_end_samples_render_the_model_being_trained(project):
    project = load_project(project.root)
    project.config.sample.every_n_epochs = 1
    project.config.sample.steps = 2
    project.config.sample.image = "dataset/demo_00.png"  # image-to-video samples
    dit, _ = load_dit(
        project.root / project.config.experts["main"].dit, dtype=torch.float32, task="ti2v"
    )
    add_lora(dit, project.config.lora)
    dit.train()
    monitor = TrainingMonitor(project, CPU)
    try:
        monitor("main", 1, dit)
    finally:
        monitor.close()
    (path,) = monitor.saved
    assert path.name == "train_main_e0001_p00_seed42.mp4"
    info = read_video_info(path)
    assert info["expert"] == "main" and info["image"].endswith("demo_00.png")
    assert dit.training  # back in train mode


def test_an_image_is_refused_for_a_text_to_video_recipe(tmp_path):
    from wanlora.demo import create_demo_project

    create_demo_project(tmp_path / "t2v", epochs=1)
    image = tmp_path / "t2v" / "dataset" / "demo_00.png"
    result = run_cli("sample", str(tmp_path / "t2v"), "--image", str(image), "--device", "cpu")
    assert result.returncode != 0
    assert "--image: recipe wan22-t2v renders from text only" in (result.stderr + result.stdout)
