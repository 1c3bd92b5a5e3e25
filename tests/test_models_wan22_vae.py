"""Wan 2.2 VAE: key mapping against the full-size layout, loading by kind, agreement with the
official Wan2_2_VAE (tests/fixtures/README.md), normalisation, frame arithmetic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import wanlora.models
from wanlora.errors import WanloraError
from wanlora.models import (
    decode_video,
    encode_latents,
    encode_video_latents,
    identify_model,
    infer_vae_info,
    load_vae,
    vae_kind,
    write_tiny_models,
    write_tiny_wan22_models,
)
from wanlora.models.assign import build_on_meta
from wanlora.models.files import identify_shapes
from wanlora.models.tiny import TINY_VAE22, tiny_vae22_layout
from wanlora.models.vae import decoded_frames, latent_frames, vae_info_from_shapes
from wanlora.models.vae22 import (
    LATENTS_MEAN,
    LATENTS_STD,
    diffusers_vae22_key_to_wan,
    vae22_config,
    wan22_vae_key_to_diffusers,
)

LAYOUTS = Path(wanlora.models.__file__).parent / "layouts"
FIXTURE = Path(__file__).parent / "fixtures" / "wan22_vae_official.safetensors"


@pytest.fixture(scope="module")
def tiny22(tmp_path_factory):
    return write_tiny_wan22_models(tmp_path_factory.mktemp("tiny22"))


@pytest.fixture(scope="module")
def tiny21(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("tiny21"))


@pytest.fixture(scope="module")
def vae(tiny22):
    return load_vae(tiny22.vae22, dtype=torch.float32, kind="wan2.2")


@pytest.fixture(scope="module")
def fixture(tiny22):
    with safe_open(str(FIXTURE), framework="pt") as f:
        made_on = f.metadata()["weights_sha256"]
    if hashlib.sha256(tiny22.vae22.read_bytes()).hexdigest() != made_on:
        pytest.fail(f"{FIXTURE.name} was made on other tiny weights; regenerate it")
    return load_file(str(FIXTURE))


def real_layout() -> dict[str, tuple[int, ...]]:
    data = json.loads((LAYOUTS / "vae_wan22.json").read_text())
    return {n: tuple(s) for n, s in data["tensors"].items()}


def close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


# --- layouts -------------------------------------------------------------------------------


def test_real_layout_maps_one_to_one_onto_diffusers_with_matching_shapes():
    real = real_layout()
    info = vae_info_from_shapes(Path("wan2.2_vae.safetensors"), real)
    assert (info.kind, info.z_dim, info.base_dim, info.decoder_base_dim) == ("wan2.2", 48, 160, 256)
    model = build_on_meta(lambda: AutoencoderKLWan(**info.diffusers_config()))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    mapped = {n: wan22_vae_key_to_diffusers(n) for n in real}
    assert None not in mapped.values() and len(set(mapped.values())) == len(real) == 196
    assert set(mapped.values()) == set(shapes)
    for original, ours in mapped.items():
        assert shapes[ours] == real[original], original
        assert diffusers_vae22_key_to_wan(ours) == original
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 704.7


def test_tiny_vae_has_the_real_names_and_shapes_scaled_by_16():
    real = real_layout()
    tiny = tiny_vae22_layout()
    assert set(tiny) == set(real)
    assert TINY_VAE22 == {"base_dim": 160 // 16, "decoder_base_dim": 256 // 16}
    for name, shape in real.items():
        got = tiny[name]
        assert len(got) == len(shape), name
        for real_dim, tiny_dim in zip(shape, got, strict=True):
            # widths shrink; kernels, 12 patchified RGB channels and 48 / 96 latent stay
            assert tiny_dim in (real_dim, real_dim // 16), (name, shape, got)
    assert tiny["encoder.conv1.weight"][1] == 12 and tiny["conv2.weight"][0] == 48


def test_identify_and_infer_each_vae(tiny22, tiny21):
    assert identify_shapes(real_layout()).variant == "wan2.2"
    info = infer_vae_info(tiny22.vae22)
    assert (info.kind, info.z_dim, info.spatial_stride) == ("wan2.2", 48, 16)
    assert (info.base_dim, info.decoder_base_dim) == (10, 16)
    assert infer_vae_info(tiny21.vae).kind == "wan2.1"
    assert identify_model(tiny21.vae).variant == "wan2.1"


# --- loading by kind ---------------------------------------------------------------------


def test_load_vae_by_kind(tiny22, tiny21, vae):
    assert vae_kind(vae) == "wan2.2"
    assert vae.config.latents_mean == LATENTS_MEAN and vae.config.latents_std == LATENTS_STD
    assert vae.config.patch_size == 2 and vae.config.scale_factor_spatial == 16
    assert not any(p.requires_grad for p in vae.parameters())
    state = load_file(str(tiny22.vae22))
    params = dict(vae.named_parameters())
    for name, tensor in state.items():
        assert torch.equal(params[wan22_vae_key_to_diffusers(name)], tensor.float()), name
    assert {p.dtype for p in load_vae(tiny22.vae22, kind=None).parameters()} == {torch.bfloat16}

    with pytest.raises(WanloraError, match="is the Wan 2.2 VAE .*needs the Wan 2.1 VAE") as error:
        load_vae(tiny22.vae22)  # the default kind is wan2.1
    assert "use wan_2.1_vae.safetensors" in str(error.value)
    with pytest.raises(WanloraError, match="is the Wan 2.1 VAE .*needs the Wan 2.2 VAE"):
        load_vae(tiny21.vae, kind="wan2.2")
    assert vae_kind(load_vae(tiny21.vae, kind=None)) == "wan2.1"


def test_wrong_vae_files(tiny22, tiny21, tmp_path):
    state = load_file(str(tiny22.vae22))
    del state["decoder.upsamples.1.upsamples.3.time_conv.bias"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(WanloraError, match="missing 1 tensor.*time_conv.bias"):
        load_vae(path, kind="wan2.2")
    state = load_file(str(tiny22.vae22))
    state["conv2.weight"] = torch.zeros(32, 32, 1, 1, 1)
    state["conv2.bias"] = torch.zeros(32)
    save_file(state, str(path))
    with pytest.raises(WanloraError, match="VAE with 32 latent channels, which this tool does not"):
        load_vae(path, kind=None)
    with pytest.raises(WanloraError, match="is a Wan DiT .* but the Wan VAE is expected"):
        load_vae(tiny21.dit_high, kind="wan2.2")


# --- agreement with the official Wan2_2_VAE ---------------------------------------------


def test_encode_reproduces_the_official_normalised_latents(vae, fixture):
    frames = fixture["frames"].numpy()  # (5, 32, 32, 3) uint8
    latents = encode_video_latents(vae, frames)
    assert latents.shape == (1, 48, 2, 2, 2) == fixture["latents_video"].shape
    close(latents, fixture["latents_video"])
    image = encode_latents(vae, frames[0])
    assert image.shape == (1, 48, 1, 2, 2)
    close(image, fixture["latents_image"])
    assert latents.std() > 0.1


def test_decode_reproduces_the_official_video(vae, fixture):
    video = decode_video(vae, fixture["latents_video"])
    assert video.shape == (1, 3, 5, 32, 32) and video.dtype == torch.float32
    close(video, fixture["decoded_video"])
    assert (video.abs() < 0.999).float().mean() > 0.5  # mostly not clamped: a real comparison
    close(decode_video(vae, fixture["latents_image"]), fixture["decoded_image"])


def test_normalisation_is_the_official_mean_and_std(vae, fixture):
    torch.testing.assert_close(torch.tensor(LATENTS_MEAN), fixture["scale_mean"], rtol=0, atol=0)
    torch.testing.assert_close(1 / torch.tensor(LATENTS_STD), fixture["scale_inv_std"])
    frames = fixture["frames"].numpy()
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        mu = vae.encode(video).latent_dist.mean  # the unnormalised encoder mean
        mean = torch.tensor(LATENTS_MEAN).view(1, 48, 1, 1, 1)
        std = torch.tensor(LATENTS_STD).view(1, 48, 1, 1, 1)
        close(encode_video_latents(vae, frames), (mu - mean) / std)
        z = fixture["latents_video"]
        raw = vae.decode(z * std + mean, return_dict=False)[0].clamp(-1, 1)
    close(decode_video(vae, z), raw)


# --- frames ----------------------------------------------------------------------------------


def test_frame_arithmetic():
    assert [latent_frames(f) for f in (1, 5, 9, 81, 121)] == [1, 2, 3, 21, 31]
    assert [decoded_frames(t) for t in (1, 2, 3, 21, 31)] == [1, 5, 9, 81, 121]


def test_clips_encode_to_1_plus_f_minus_1_over_4_and_decode_to_4t_minus_3(vae):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (2, 9, 16, 16, 3), dtype=np.uint8)  # batch of two 9-frame clips
    latents = encode_video_latents(vae, clip)
    assert latents.shape == (2, 48, 3, 1, 1)
    assert decode_video(vae, latents).shape == (2, 3, 9, 16, 16)
    with pytest.raises(ValueError, match="4n \\+ 1 frames"):
        encode_video_latents(vae, clip[:, :8])
    with pytest.raises(ValueError, match="multiple of 16"):
        encode_video_latents(vae, clip[0, :, :8])
    with pytest.raises(ValueError, match="uint8"):
        encode_video_latents(vae, clip.astype(np.float32))


def test_config_is_diffusers_wan22_vae():
    config = vae22_config()
    assert config["is_residual"] and config["z_dim"] == 48
    assert (config["base_dim"], config["decoder_base_dim"]) == (160, 256)
    assert config["temperal_downsample"] == [False, True, True]
    assert len(config["latents_mean"]) == len(config["latents_std"]) == 48
