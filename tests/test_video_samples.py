"""Video samples and per-expert guidance on the demo's tiny models (CPU, real diffusers
pipeline, real H.264 files decoded with PyAV)."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
import torch
from PIL import Image

from test_sample import write_lora
from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.lora.inject import lora_parameters
from wanlora.sampling.files import read_png_info, video_of
from wanlora.sampling.sample import sample_project
from wanlora.sampling.settings import clip_frames, guidance_scales
from wanlora.sampling.video_file import read_frames

CPU = torch.device("cpu")
PROMPT = ["flat demo shapes, a red circle on a blue background"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = create_demo_project(tmp_path_factory.mktemp("video") / "demo", epochs=1)
    write_lora(project, "high", 1)
    write_lora(project, "low", 2)
    return project


def test_frames_give_an_h264_mp4_beside_the_first_frame_png(project, caplog):
    with caplog.at_level(logging.WARNING):
        result = sample_project(
            project, PROMPT, seeds=[5], steps=2, width=64, height=48, frames=6, device=CPU
        )
    assert "6 frames is not 4n+1" in caplog.text and "rendering 5" in caplog.text
    [png], [video] = result.images, result.videos
    assert video == png.with_suffix(".mp4") and video.name == "p00_seed5_high1_low1.mp4"
    assert video_of(png, read_png_info(png)) == video
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 16  # the A14B models' frame rate
        assert stream.codec_context.pix_fmt == "yuv420p"
    frames = read_frames(video)
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
    info = read_png_info(png)
    assert (
        info["frames"] == 5
        and info["fps"] == 16
        and info["guidance"]
        == {
            "high": 4.0,
            "low": 3.0,
        }
    )
    still = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert still.shape == (48, 64, 3)
    assert np.abs(still - frames[0].astype(int)).mean() < 12  # the PNG is the first frame

    # a name in use: the PNG and its video move to the same new version together
    again = sample_project(
        project, PROMPT, seeds=[5], steps=2, width=64, height=48, frames=5, device=CPU
    )
    assert again.images[0].name == "p00_seed5_high1_low1_v2.png"
    assert again.videos[0].name == "p00_seed5_high1_low1_v2.mp4"


def test_one_frame_is_a_png_only(project, tmp_path):
    result = sample_project(project, PROMPT, seeds=[6], steps=2, device=CPU, out_dir=tmp_path)
    assert result.videos == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p00_seed6_high1_low1.png"]
    assert "video" not in read_png_info(result.images[0])


def test_clip_frames_round_to_4n_plus_1():
    assert clip_frames(1) == (1, None)
    assert clip_frames(81) == (81, None)
    assert clip_frames(2)[0] == 5  # asked for a clip: at least 5 frames
    assert clip_frames(7)[0] == 9 and clip_frames(80)[0] == 81 and clip_frames(83)[0] == 85
    with pytest.raises(WanloraError):
        clip_frames(0)


def test_guidance_defaults_by_task_and_overrides(project):
    config = project.config.model_copy(deep=True)
    names = ["high", "low"]
    assert guidance_scales(config, names) == {"high": 4.0, "low": 3.0}  # T2V-A14B official
    config.sample.guidance_scale = 2.5
    assert guidance_scales(config, names) == {"high": 2.5, "low": 2.5}
    config.experts["low"].guidance_scale = 1.5
    assert guidance_scales(config, names) == {"high": 2.5, "low": 1.5}
    assert guidance_scales(config, names, override=1.0) == {"high": 1.0, "low": 1.0}
    config.experts["high"].guidance_scale = 1.0
    with pytest.raises(WanloraError, match="guides both phases or neither"):
        guidance_scales(config, names)


def test_each_expert_guides_its_own_phase(project):
    """The low scale changes only what happens after the switch; the high scale changes
    the latents the low expert starts from: each scale reaches its own expert."""
    from wanlora.models import load_dit
    from wanlora.sampling.pipeline import DEFAULT_NEGATIVE_PROMPT, RenderSpec, render
    from wanlora.sampling.sample import dit_path, encode_prompts, load_vae_for

    context, negative = encode_prompts(project, [PROMPT[0], DEFAULT_NEGATIVE_PROMPT], CPU)
    experts = {n: load_dit(dit_path(project, n), dtype=torch.float32)[0] for n in ("high", "low")}
    vae = load_vae_for(project, CPU)
    entering_low: list[torch.Tensor] = []

    def first_low_input(_module, _args, kwargs):
        if len(entering_low) == renders:
            entering_low.append(kwargs["hidden_states"].clone())

    experts["low"].register_forward_pre_hook(first_low_input, with_kwargs=True)

    def run(high: float, low: float) -> np.ndarray:
        spec = RenderSpec(
            contexts=[context],
            seeds=[9],
            negative=negative,
            steps=4,
            width=32,
            height=32,
            guidance={"high": high, "low": low},
            shift=project.config.sample.shift,
            boundary=project.config.boundary,
        )
        [[image]] = render(experts, vae, spec, device=CPU, dtype=torch.float32)
        return np.asarray(image).astype(int)

    renders = 0
    official = run(4.0, 3.0)
    renders = 1
    other_low = run(4.0, 6.0)
    renders = 2
    other_high = run(8.0, 3.0)
    assert torch.equal(entering_low[0], entering_low[1])  # the high phase: same scale, same
    assert not torch.equal(entering_low[0], entering_low[2])  # the high scale acted there
    assert np.abs(official - other_low).max() > 0  # the low scale acted after the switch
    assert np.abs(official - other_high).max() > 0


def test_epoch_samples_share_noise_and_the_base_row_is_rendered_once(project):
    from wanlora.models import load_dit
    from wanlora.outputs import lora_path
    from wanlora.sampling.epoch_samples import TrainingMonitor
    from wanlora.sampling.sample import attach_lora, dit_path

    s = project.config.sample
    saved = s.model_copy()
    s.every_n_epochs, s.steps, s.frames, s.strengths = 1, 2, 5, [0.0, 1.0]
    s.width = s.height = 32
    try:
        model, _ = load_dit(dit_path(project, "high"), dtype=torch.float32)
        attach_lora(model, lora_path(project, "high"))
        monitor = TrainingMonitor(project, CPU)
        monitor("high", 1, model)
        with torch.no_grad():  # "training": the LoRA moves between the epochs
            for param in lora_parameters(model):
                param.mul_(-1.5)
        monitor("high", 2, model)
        monitor.close()
        s.strengths = [1.0]
        resumed = TrainingMonitor(project, CPU)  # a resumed run finds the base row on disk
        resumed("high", 3, model)
        resumed.close()
    finally:
        project.config.sample = saved
    assert [p.name for p in monitor.base_saved] == ["train_base_p00_seed42.png"]
    assert resumed.base_saved == []
    names = [p.name for p in monitor.saved]
    assert names == [
        "train_high_e0001_p00_seed42_s0.png",
        "train_high_e0001_p00_seed42.png",
        "train_high_e0002_p00_seed42_s0.png",
        "train_high_e0002_p00_seed42.png",
    ]

    def clip(png):
        assert png.with_suffix(".mp4").exists()
        return np.stack(read_frames(png.with_suffix(".mp4")))

    base, e1_zero, e1, e2_zero, e2 = [clip(p) for p in monitor.base_saved + monitor.saved]
    # the same seed and noise every epoch: with the LoRA at 0 every epoch renders the base
    assert np.array_equal(e1_zero, e2_zero) and np.array_equal(base, e1_zero)
    assert not np.array_equal(e1, e2)  # ... and the epochs differ by the LoRA alone
    info = read_png_info(monitor.saved[1])
    assert info["kind"] == "training" and info["strength"] == 1.0 and info["frames"] == 5
    assert read_png_info(monitor.base_saved[0])["kind"] == "training_base"
