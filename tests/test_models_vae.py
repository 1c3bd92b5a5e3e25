"""VAE loader: key mapping against the real Wan 2.1 VAE layout and diffusers' own converter;
encode_latents' pixel conversion, normalisation, shapes and dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from safetensors.torch import load_file

import wanlora.models
from wanlora.models import encode_latents, load_vae, write_tiny_models
from wanlora.models.assign import build_on_meta
from wanlora.models.tiny import TINY_VAE_BASE_DIM, tiny_vae_layout
from wanlora.models.vae import diffusers_vae_key_to_wan, pixels_to_video, wan_vae_key_to_diffusers

LAYOUTS = Path(wanlora.models.__file__).parent / "layouts"

# The 16 published Wan 2.1 latent statistics.
WAN21_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]  # fmt: skip
WAN21_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def vae32(tiny):
    return load_vae(tiny.vae, dtype=torch.float32)


def real_vae_layout() -> dict[str, tuple[int, ...]]:
    data = json.loads((LAYOUTS / "vae_wan21.json").read_text())
    return {name: tuple(shape) for name, shape in data["tensors"].items()}


def test_real_layout_maps_one_to_one_onto_diffusers_with_matching_shapes():
    layout = real_vae_layout()
    model = build_on_meta(lambda: AutoencoderKLWan(base_dim=96, z_dim=16))
    model_shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    mapped = {name: wan_vae_key_to_diffusers(name) for name in layout}
    assert None not in mapped.values()
    assert len(set(mapped.values())) == len(mapped)
    assert set(mapped.values()) == set(model_shapes)
    for name, ours in mapped.items():
        assert model_shapes[ours] == layout[name], name
        assert diffusers_vae_key_to_wan(ours) == name


def test_tiny_vae_has_the_real_names_and_scaled_shapes():
    real = real_vae_layout()
    tiny_layout = tiny_vae_layout()
    assert set(tiny_layout) == set(real)
    scale = 96 // TINY_VAE_BASE_DIM
    # Channel dims shrink by the base-width ratio; kernel sizes, RGB and z_dim stay.
    for name, shape in real.items():
        got = tiny_layout[name]
        assert len(got) == len(shape), name
        for real_dim, tiny_dim in zip(shape, got, strict=True):
            assert tiny_dim in (real_dim, real_dim // scale), (name, shape, got)
    assert tiny_layout["conv2.weight"][0] == 16  # z_dim stays 16


def test_mapping_agrees_with_diffusers_own_converter(tiny, vae32):
    state = load_file(str(tiny.vae))
    theirs = convert_wan_vae_to_diffusers(dict(state))
    ours = dict(vae32.named_parameters())
    assert set(theirs) == set(ours)
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor.float()), name


def test_load_vae_dtype_and_config(tiny):
    vae = load_vae(tiny.vae)
    assert {p.dtype for p in vae.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in vae.parameters())
    assert vae.config.z_dim == 16 and vae.config.base_dim == TINY_VAE_BASE_DIM
    assert vae.config.latents_mean == WAN21_MEAN and vae.config.latents_std == WAN21_STD


def test_pixels_to_video_is_x_over_127_5_minus_1():
    image = np.array([[[0, 127, 255], [1, 2, 3]]], dtype=np.uint8)  # H=1, W=2
    video = pixels_to_video(image, torch.float32, torch.device("cpu"))
    assert video.shape == (1, 3, 1, 1, 2)
    expected = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1) / 127.5 - 1
    assert torch.equal(video[0, :, 0], expected)


def test_encode_latents_normalises_the_encoder_mean(vae32):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    latents = encode_latents(vae32, image)
    assert latents.shape == (1, 16, 1, 4, 6) and latents.dtype == torch.float32
    with torch.no_grad():
        video = torch.from_numpy(image).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1
        mu = vae32.encode(video).latent_dist.mean
    mean = torch.tensor(WAN21_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_STD).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(latents, (mu - mean) / std)
    assert latents.std() > 0.01


def test_encode_latents_batches_and_bf16(tiny, vae32):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(2)]
    batch = encode_latents(vae32, images)
    assert batch.shape == (2, 16, 1, 2, 3)
    for i, image in enumerate(images):
        torch.testing.assert_close(batch[i : i + 1], encode_latents(vae32, image))
    assert torch.equal(encode_latents(vae32, np.stack(images)), batch)
    vae16 = load_vae(tiny.vae)  # bf16 by default, like the reference
    latents16 = encode_latents(vae16, images[0])
    assert latents16.dtype == torch.bfloat16 and torch.isfinite(latents16).all()
    torch.testing.assert_close(latents16.float(), batch[:1], atol=0.1, rtol=0.1)


def test_encode_latents_rejects_bad_pixels(vae32):
    with pytest.raises(ValueError, match="same size"):
        encode_latents(vae32, [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 24, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        encode_latents(vae32, np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of 8"):
        encode_latents(vae32, np.zeros((12, 16, 3), np.uint8))
