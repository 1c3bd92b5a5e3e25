"""TI2V-5B training (train/ti2v.py): per-token timesteps, the loss mask, the image-to-video
share, and a real run on the tiny TI2V demo (images and PyAV videos), resumed bit-identically."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wanlora.demo_ti2v import create_ti2v_demo_project
from wanlora.lora.file import read_lora_file
from wanlora.models import encode_latents, encode_video_latents, load_dit, load_vae
from wanlora.models.tiny import write_tiny_wan22_models
from wanlora.recipes import load_project, load_recipe
from wanlora.run.experts import prepare_data, run_expert
from wanlora.train import ti2v
from wanlora.train.callbacks import StopTraining
from wanlora.train.state import latest_state_dir, read_state_meta
from wanlora.train.step import step_functions
from wanlora.train.timesteps import dit_timestep

CPU = torch.device("cpu")


def official_token_timesteps(t: float, frames: int, height: int, width: int, i2v: bool):
    """The reference's TI2V timesteps, built as W wan/textimage2video.py:550-578 does: a mask
    of ones over the latent [48, F, H, W] (0 on frame 0 for image-to-video), then
    `mask[0][:, ::2, ::2] * t` flattened."""
    mask = torch.ones(48, frames, height, width)
    if i2v:
        mask[:, 0] = 0
    return (mask[0][:, ::2, ::2] * t).flatten()


def test_token_timesteps_are_the_official_ones_per_item():
    timestep = torch.tensor([501.0, 37.0, 990.0])
    clean = torch.tensor([True, False, True])
    tokens = ti2v.token_timesteps(timestep, clean, (3, 4, 6))
    assert tokens.shape == (3, 3 * 2 * 3)
    for b in range(3):
        expected = official_token_timesteps(float(timestep[b]), 3, 4, 6, bool(clean[b]))
        assert torch.equal(tokens[b], expected)


def test_loss_mask_leaves_out_only_the_image_frame_of_i2v_items():
    clean = torch.tensor([True, False])
    weights = ti2v.frame_weights(clean, 3, mask_first=True)
    assert weights.shape == (2, 1, 3, 1, 1)
    assert weights.flatten().tolist() == [0, 1, 1, 1, 1, 1]
    assert torch.all(ti2v.frame_weights(clean, 3, mask_first=False) == 1)

    generator = torch.Generator().manual_seed(0)
    prediction, target = (torch.randn(2, 48, 3, 2, 2, generator=generator) for _ in range(2))
    loss = ti2v.masked_mse(prediction, target, weights)
    squared = (prediction - target).square()
    expected = torch.cat([squared[0, :, 1:].flatten(), squared[1].flatten()]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # a frame-0 error of an image-to-video item changes nothing
    changed = prediction.clone()
    changed[0, :, 0] += 100.0
    assert ti2v.masked_mse(changed, target, weights).item() == pytest.approx(loss.item(), rel=1e-6)
    # no image-to-video item: the plain MSE
    ones = ti2v.frame_weights(torch.tensor([False, False]), 3, mask_first=True)
    plain = F.mse_loss(prediction, target).item()
    assert ti2v.masked_mse(prediction, target, ones).item() == pytest.approx(plain, rel=1e-6)


def fake_samples(frames: int, count: int = 8):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(48, frames, 4, 4, generator=generator), torch.randn(5, 64, generator=generator))
        for _ in range(count)
    ]


def i2v_choices(share: float, frames: int, seed: int) -> list[bool]:
    config = load_recipe("wan22-ti2v-5b")
    config.training.ti2v_i2v_share = share
    samples, generator = fake_samples(frames), torch.Generator().manual_seed(seed)
    chosen = []
    for b in range(len(samples)):
        inputs = ti2v.model_inputs(samples, [b], config, config.experts["main"], generator, CPU)
        chosen.append(bool(inputs.frame_weights[0, 0, 0, 0, 0] == 0))
    return chosen


def test_the_i2v_share_is_fixed_by_the_seed():
    assert i2v_choices(0.5, 3, seed=5) == i2v_choices(0.5, 3, seed=5)
    assert i2v_choices(0.5, 3, seed=5) != i2v_choices(0.5, 3, seed=6)
    assert 0 < sum(i2v_choices(0.5, 3, seed=5)) < 8
    assert not any(i2v_choices(0.0, 3, seed=5))
    assert all(i2v_choices(1.0, 3, seed=5))
    assert not any(i2v_choices(1.0, 1, seed=5))  # images always train text-to-image


def test_i2v_inputs_hold_the_clean_image_latent_with_timestep_zero():
    config = load_recipe("wan22-ti2v-5b")
    config.training.ti2v_i2v_share = 1.0
    samples = fake_samples(3)
    draws_before = torch.Generator().manual_seed(3)
    noise, t, _coins = ti2v.draws(samples, [0, 1], config, config.experts["main"], draws_before)
    inputs = ti2v.model_inputs(
        samples, [0, 1], config, config.experts["main"], torch.Generator().manual_seed(3), CPU
    )
    latents = torch.stack([samples[0][0], samples[1][0]])
    assert torch.equal(inputs.noisy[:, :, 0], latents[:, :, 0])  # the image, clean
    noised = (1 - t.view(-1, 1, 1, 1, 1)) * latents + t.view(-1, 1, 1, 1, 1) * noise
    assert torch.equal(inputs.noisy[:, :, 1:], noised[:, :, 1:])
    assert torch.equal(inputs.target, noise - latents)
    per_frame = 2 * 2
    assert torch.all(inputs.timestep[:, :per_frame] == 0)
    assert torch.equal(inputs.timestep[:, per_frame:], dit_timestep(t)[:, None].expand(-1, 8))


def test_a_batch_without_i2v_items_passes_one_timestep_per_item():
    config = load_recipe("wan22-ti2v-5b")
    config.training.ti2v_i2v_share = 0.0
    samples = fake_samples(3)
    _noise, t, _coins = ti2v.draws(
        samples, [0, 1], config, config.experts["main"], torch.Generator().manual_seed(3)
    )
    inputs = ti2v.model_inputs(
        samples, [0, 1], config, config.experts["main"], torch.Generator().manual_seed(3), CPU
    )
    assert torch.equal(inputs.timestep, dit_timestep(t))  # (B,): the per-token values, once
    assert torch.all(inputs.frame_weights == 1)


def test_per_token_timesteps_of_a_t2v_item_equal_the_scalar_timestep(tmp_path):
    paths = write_tiny_wan22_models(tmp_path)
    model, _ = load_dit(paths.ti2v, dtype=torch.float32, task="ti2v")
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 48, 2, 4, 4, generator=generator)
    context = torch.randn(1, 512, 64, generator=generator)
    timestep = torch.tensor([400.0])
    tokens = ti2v.token_timesteps(timestep, torch.tensor([False]), (2, 4, 4))
    with torch.no_grad():
        scalar = model(noisy, timestep, context, return_dict=False)[0]
        per_token = model(noisy, tokens, context, return_dict=False)[0]
    torch.testing.assert_close(per_token, scalar, rtol=1e-5, atol=1e-6)


def test_a_clip_latent_frame_0_is_the_latent_of_its_first_frame_alone(tmp_path):
    """Why the cached clip latents serve image-to-video: the Wan 2.2 VAE is causal."""
    vae = load_vae(write_tiny_wan22_models(tmp_path).vae22, dtype=torch.float32, kind="wan2.2")
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    clip = encode_video_latents(vae, frames)
    image = encode_latents(vae, frames[0])
    assert clip.shape == (1, 48, 2, 2, 2)
    torch.testing.assert_close(clip[:, :, :1], image, rtol=1e-4, atol=1e-5)


def test_step_functions_pick_the_task():
    assert step_functions(load_recipe("wan22-ti2v-5b"))[1] is ti2v.model_inputs
    assert step_functions(load_recipe("wan22-t2v"))[1] is not ti2v.model_inputs


# --- a real run on the tiny TI2V demo ----------------------------------------------------


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("ti2v") / "project"
    project = create_ti2v_demo_project(root, epochs=1)
    prepare_data(project, CPU)  # the cache, built once for every copy
    return root


@pytest.fixture
def project_dir(demo_template, tmp_path):
    target = tmp_path / "project"
    shutil.copytree(demo_template, target)
    return target


def test_trains_one_lora_on_images_and_clips_and_resumes_bit_identically(project_dir, tmp_path):
    text = (project_dir / "wanlora.toml").read_text()
    (project_dir / "wanlora.toml").write_text(
        text.replace("save_state_every_n_steps = 9", "save_state_every_n_steps = 4")
    )
    other = tmp_path / "other"
    shutil.copytree(project_dir, other)
    project = load_project(project_dir)
    data = prepare_data(project, CPU)
    assert sorted({s[0].shape[1] for s in data.samples}) == [1, 3]  # images and 9-frame clips
    assert {s[0].shape[0] for s in data.samples} == {48}  # Wan 2.2 VAE latents

    losses = []
    done = run_expert(project, "main", device=CPU, on_step=lambda r: losses.append(r.loss))
    assert done.steps == 9 and len(losses) == 9  # 6 images + 3 clips, 1 epoch
    assert all(np.isfinite(losses))
    lora, meta = read_lora_file(done.lora_path)
    assert done.lora_path.name == "WAN2.2-5B_Demo5B_v1_by-wanlora.safetensors"
    assert meta["modelspec.architecture"] == "wan2.2_ti2v_5b/lora"
    assert meta["wanlora.expert"] == "main" and meta["wanlora.timestep_range"] == "0-1000"
    assert torch.count_nonzero(lora["lora_unet_blocks_0_self_attn_q.lora_up.weight"]) > 0

    def stop_at_5(report):
        if report.step == 5:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_expert(load_project(other), "main", device=CPU, on_step=stop_at_5)
    assert read_state_meta(latest_state_dir(other / "output", "main")).step == 5
    resumed = run_expert(load_project(other), "main", device=CPU)
    assert resumed.steps == 9
    again, _ = read_lora_file(resumed.lora_path)
    assert lora.keys() == again.keys()
    for key in lora:
        assert torch.equal(lora[key], again[key]), key
