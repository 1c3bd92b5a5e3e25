"""I2V-A14B: the recipe, the conditioning (mask + y) and its cache, the 36-channel DiT input.

The mask is checked against hand-worked values and the official code's output
(tests/fixtures/wan22_i2v_mask_official.json, made by running the official lines); y
against diffusers' WanImageToVideoPipeline, an independent implementation of the official
construction, on the tiny real-layout VAE and a real video.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline

from video_files import write_h264
from wanlora.cache.build import build_cache, load_cached_tensors
from wanlora.cache.i2v_conditioning import (
    conditioning_mask,
    conditioning_video,
    encode_conditioning,
)
from wanlora.dataset.lint import check_dataset
from wanlora.dataset.video_frames import load_clip_frames
from wanlora.demo_i2v import create_i2v_demo_project
from wanlora.errors import WanloraError
from wanlora.models import encode_video_latents, load_vae
from wanlora.models.registry import MODEL_FILES
from wanlora.recipes import config_to_toml, load_project, load_recipe
from wanlora.train.i2v_inputs import with_conditioning
from wanlora.train.step import i2v_model_inputs, step_functions

CPU = torch.device("cpu")
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2v") / "project"
    create_i2v_demo_project(root, epochs=1)
    build_cache(load_project(root), device=CPU)
    return root


@pytest.fixture
def project(template, tmp_path):
    shutil.copytree(template, tmp_path / "p")
    return load_project(tmp_path / "p")


# --- the recipe ---------------------------------------------------------------------------


def test_the_i2v_recipe_switches_experts_at_0_900():
    """Wan 2.2 I2V's boundary is 0.900 (W wan/configs/wan_i2v_A14B.py; musubi's i2v ranges
    0-900 / 900-1000). ai-toolkit uses T2V's 0.875 for I2V too: that is wrong for this model."""
    c = load_recipe("wan22-i2v")
    assert c.task == "i2v-A14B" and c.dit_task == "i2v" and c.boundary == 0.9
    assert (c.experts["high"].min_timestep, c.experts["high"].max_timestep) == (900, 1000)
    assert (c.experts["low"].min_timestep, c.experts["low"].max_timestep) == (0, 900)
    assert c.experts["high"].min_timestep != 875  # not ai-toolkit's 0.875
    assert c.models.vae == "wan21-vae"  # the A14B models use the Wan 2.1 VAE
    for expert, file in (("high", "high_noise"), ("low", "low_noise")):
        model = MODEL_FILES[c.experts[expert].dit]
        assert model.files == (
            f"split_files/diffusion_models/wan2.2_i2v_{file}_14B_fp16.safetensors",
        )
    # the community recipe's hyperparameters, carried over from the T2V recipe unchanged
    t2v = load_recipe("wan22-t2v")
    for table in ("lora", "optimizer", "scheduler", "timesteps", "training"):
        assert getattr(c, table) == getattr(t2v, table), table
    assert "recipe itself is T2V" in c.description and "not tuned" in c.description
    assert "recipe itself is T2V" in config_to_toml(c)  # what `inspect recipe` prints
    assert (c.sample.shift, c.sample.guidance_scale, c.sample.frames) == (5.0, 3.5, 81)


def test_an_image_only_dataset_is_refused_by_check(project):
    for path in (project.root / "dataset").iterdir():
        path.unlink()
    image = np.zeros((32, 48, 3), np.uint8)
    from PIL import Image

    Image.fromarray(image).save(project.root / "dataset" / "a.png")
    (project.root / "dataset" / "a.txt").write_text("flat demo shapes, a still image")
    report = check_dataset(project)
    messages = [f.message for f in report.errors]
    assert any(
        "i2v-A14B task trains motion after the first frame" in m and "add videos" in m
        for m in messages
    ), messages


# --- the mask and y -----------------------------------------------------------------------


def test_the_mask_is_1_on_latent_frame_0_only_hand_worked():
    mask = conditioning_mask(9, 2, 3)  # 9 frames -> 3 latent frames
    assert mask.shape == (4, 3, 2, 3) and mask.dtype == torch.float32
    assert torch.equal(mask[:, 0], torch.ones(4, 2, 3))
    assert torch.equal(mask[:, 1:], torch.zeros(4, 2, 2, 3))
    assert torch.equal(conditioning_mask(1, 1, 1), torch.ones(4, 1, 1, 1))
    with pytest.raises(ValueError, match="4n \\+ 1"):
        conditioning_mask(8, 2, 3)


def test_the_mask_is_the_official_codes():
    fixture = json.loads((FIXTURES / "wan22_i2v_mask_official.json").read_text())
    for key, official in fixture["masks"].items():
        frames, height, width = map(int, key.split("x"))
        mask = conditioning_mask(frames, height, width)
        assert list(mask.shape) == official["shape"]
        assert torch.equal(mask, torch.tensor(official["values"])), key


def test_the_conditioning_video_is_the_first_frame_then_mid_grey():
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3
    video = conditioning_video(frame, 5)
    assert video.shape == (1, 3, 5, 4, 6)
    assert torch.equal(video[0, :, 0], torch.from_numpy(frame).permute(2, 0, 1) / 127.5 - 1)
    assert torch.equal(video[0, :, 1:], torch.zeros(3, 4, 4, 6))  # 0 in [-1, 1], not black


def test_y_is_the_vae_code_of_the_grey_video_as_diffusers_builds_it(template):
    project = load_project(template)
    vae = load_vae(project.root / project.config.models.vae, dtype=torch.float32)
    item = load_cached_items(project)[0]
    frames = load_clip_frames(item.clip, item.bucket)
    ours = encode_conditioning(vae, frames[0], len(frames))
    assert ours.shape == (20, 2, 4, 6)

    pipe = WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=None, transformer=None
    )
    image = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    _noise, condition = pipe.prepare_latents(image, 1, 16, 32, 48, len(frames), torch.float32, CPU)
    torch.testing.assert_close(ours, condition[0], rtol=0, atol=1e-6)
    # y holds the grey frames' VAE code: neither zero latents nor the clip's own latents
    y = ours[4:]
    assert y[:, 1:].abs().amin() >= 0 and y[:, 1:].abs().max() > 0.05
    clip_latents = encode_video_latents(vae, frames)[0]
    torch.testing.assert_close(y[:, 0], clip_latents[:, 0], rtol=0, atol=1e-5)  # causal frame 0
    assert not torch.allclose(y[:, 1:], clip_latents[:, 1:], atol=1e-3)


def load_cached_items(project):
    from wanlora.dataset.items import load_items

    return load_items(project)


# --- the cache ----------------------------------------------------------------------------


def test_every_clip_gets_a_conditioning_reused_and_invalidated_like_latents(project):
    entries = build_cache(project, device=CPU).entries
    assert all(e.conditioning_path is not None and e.conditioning_path.is_file() for e in entries)
    result = build_cache(project, device=CPU)
    assert (result.conditionings_computed, result.conditionings_reused) == (0, len(entries))
    for latents, _context, conditioning in load_cached_tensors(entries):
        assert conditioning.shape == (20, *latents.shape[1:])
    # a changed video: its clips' latents and conditionings are recomputed, the old removed
    first = entries[0]
    write_h264(first.item.image_path, 10, fps=16, size=(48, 32))
    clips = sum(e.item.image_path == first.item.image_path for e in entries)
    again = build_cache(project, device=CPU)
    assert again.conditionings_computed == again.latents_computed == clips == 2
    assert first.conditioning_path in again.removed
    # a corrupt entry is recomputed, never trained on
    victim = again.entries[1].conditioning_path
    victim.write_bytes(victim.read_bytes()[:100])
    assert build_cache(project, device=CPU).conditionings_computed == 1


# --- the DiT input ------------------------------------------------------------------------


def test_the_dit_input_is_noisy_then_mask_then_y(project):
    entries = build_cache(project, device=CPU).entries
    samples = load_cached_tensors(entries)
    config = project.config
    assert step_functions(config)[1] is i2v_model_inputs  # the recipe's step takes the hook
    generator = torch.Generator().manual_seed(0)
    inputs = i2v_model_inputs(samples, [0], config, config.experts["high"], generator, CPU)
    latents, _context, conditioning = samples[0]
    assert inputs.noisy.shape == (1, 36, *latents.shape[1:])
    assert inputs.target.shape == (1, 16, *latents.shape[1:])  # the latent's velocity only
    assert torch.equal(inputs.noisy[0, 16:], conditioning.float())
    assert torch.equal(inputs.noisy[0, 16:20], conditioning_mask(5, 4, 6))
    # the noisy part is (1 - t) x + t noise with the draws a T2V step takes (noise, then t)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn((1, *latents.shape), generator=generator)
    t = float(inputs.t[0])
    torch.testing.assert_close(inputs.noisy[0, :16], (1 - t) * latents.float() + t * noise[0])
    assert 0.9 <= t <= 1.0  # the high-noise expert's range
    # T2V items pass through unchanged; a mixed batch is a bug, not silently trained on
    plain = torch.zeros(1, 16, 2, 4, 6)
    assert with_conditioning(plain, [(latents, _context)]) is plain
    with pytest.raises(ValueError, match="mixes"):
        with_conditioning(torch.zeros(2, 16, 2, 4, 6), [samples[0], (latents, _context)])


def test_a_t2v_dit_is_refused_for_the_i2v_recipe(project, tmp_path):
    from wanlora.train.setup import load_expert_model

    t2v = project.root / "models" / "wan2.2_t2v_high_noise_tiny_fp16.safetensors"
    config = project.config.model_copy(deep=True)
    config.experts["high"].dit = str(t2v)
    with pytest.raises(WanloraError, match=r"needs an image-to-video .*in_dim 36"):
        load_expert_model(project, "high", config, CPU)
