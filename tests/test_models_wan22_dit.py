"""Wan 2.2 I2V-A14B expert and TI2V-5B DiT: key sets against the full-size layouts, what a
file is, loading, and agreement with the official model's outputs (tests/fixtures/README.md),
per-token timesteps included."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import wanlora.models
from wanlora.errors import WanloraError
from wanlora.models import (
    identify_model,
    load_dit,
    ti2v_token_timesteps,
    write_tiny_models,
    write_tiny_wan22_models,
)
from wanlora.models.assign import build_on_meta
from wanlora.models.dit import dit_info_from_shapes, wan_key_to_diffusers
from wanlora.models.files import identify_shapes
from wanlora.models.registry import MODEL_FILES
from wanlora.models.tiny import tiny_dit_layout

LAYOUTS = Path(wanlora.models.__file__).parent / "layouts"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tiny22(tmp_path_factory):
    return write_tiny_wan22_models(tmp_path_factory.mktemp("tiny22"))


def layout(name: str) -> dict[str, tuple[int, ...]]:
    data = json.loads((LAYOUTS / name).read_text())
    return {n: tuple(s) for n, s in data["tensors"].items()}


def first_two_blocks(names) -> set[str]:
    return {n for n in names if not n.startswith("blocks.") or int(n.split(".")[1]) < 2}


def official(name: str, weights: Path) -> dict[str, torch.Tensor]:
    """A fixture's tensors, after checking it was made on these very weights."""
    path = FIXTURES / name
    with safe_open(str(path), framework="pt") as f:
        made_on = f.metadata()["weights_sha256"]
    if hashlib.sha256(weights.read_bytes()).hexdigest() != made_on:
        pytest.fail(f"{name} was made on other tiny weights; regenerate it (fixtures/README.md)")
    return load_file(str(path))


def padded_context(context: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each prompt's rows, then zeros up to 512, as the official model pads them."""
    out = torch.zeros(context.shape[0], 512, context.shape[2])
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = context[i, :n]
    return out


# --- full-size layouts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dit_wan22_t2v_a14b_expert.json", ("t2v", 5120, 40, 40, 13824, 16, 16)),
        ("dit_wan22_i2v_a14b_expert.json", ("i2v", 5120, 40, 40, 13824, 36, 16)),
        ("dit_wan22_ti2v_5b.json", ("ti2v", 3072, 24, 30, 14336, 48, 48)),
    ],
)
def test_full_size_layout_maps_one_to_one_onto_our_diffusers_config(name, expected):
    real = layout(name)
    info = dit_info_from_shapes(Path(name), {n: (torch.float16, s) for n, s in real.items()})
    got = (info.task, info.dim, info.num_heads, info.num_layers, info.ffn_dim)
    assert got + (info.in_channels, info.out_channels) == expected
    assert info.vae_kind == ("wan2.2" if info.task == "ti2v" else "wan2.1")
    model = build_on_meta(lambda: WanTransformer3DModel(**info.diffusers_config()))
    assert model.condition_embedder.image_embedder is None  # no CLIP branch in Wan 2.2
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    mapped = {n: wan_key_to_diffusers(n) for n in real}
    assert set(mapped.values()) == set(shapes) and len(set(mapped.values())) == len(real)
    for original, ours in mapped.items():
        assert shapes[ours] == real[original], original


def test_identifies_each_full_size_dit():
    described = {
        name: identify_shapes(layout(name))
        for name in (
            "dit_wan22_t2v_a14b_expert.json",
            "dit_wan22_i2v_a14b_expert.json",
            "dit_wan22_ti2v_5b.json",
        )
    }
    assert [(i.kind, i.variant) for i in described.values()] == [
        ("dit", "t2v"),
        ("dit", "i2v"),
        ("dit", "ti2v"),
    ]
    assert described["dit_wan22_i2v_a14b_expert.json"].description == (
        "a Wan 2.2 I2V-A14B expert DiT"
    )
    assert described["dit_wan22_ti2v_5b.json"].description == "a Wan 2.2 TI2V-5B DiT"
    # a ComfyUI prefix changes nothing
    prefixed = {
        "model.diffusion_model." + n: s for n, s in layout("dit_wan22_ti2v_5b.json").items()
    }
    assert identify_shapes(prefixed).variant == "ti2v"


@pytest.mark.parametrize(
    ("task", "name"),
    [("i2v", "dit_wan22_i2v_a14b_expert.json"), ("ti2v", "dit_wan22_ti2v_5b.json")],
)
def test_tiny_dit_has_the_real_key_names_and_channels(task, name):
    real = layout(name)
    tiny = tiny_dit_layout(task)
    assert set(tiny) == first_two_blocks(real)
    # the channel widths are the real ones; only the model width shrinks
    assert tiny["patch_embedding.weight"][1:] == real["patch_embedding.weight"][1:]
    assert tiny["head.head.weight"][0] == real["head.head.weight"][0]


# --- identification and wrong files -----------------------------------------------------


def test_identify_model_tells_each_tiny_file(tiny22, tmp_path):
    assert identify_model(tiny22.i2v_high).variant == "i2v"
    assert identify_model(tiny22.i2v_low).variant == "i2v"
    assert identify_model(tiny22.ti2v).variant == "ti2v"
    t2v = write_tiny_models(tmp_path / "t2v")
    assert identify_model(t2v.dit_high).variant == "t2v"
    assert identify_model(t2v.vae).variant == "wan2.1"
    assert identify_model(tiny22.vae22).variant == "wan2.2"
    assert wanlora.models.identify_model_file(tiny22.ti2v) == "dit"


def test_each_task_loads_only_as_itself(tiny22):
    _, info = load_dit(tiny22.i2v_high, task="i2v")
    assert (info.task, info.in_channels, info.out_channels) == ("i2v", 36, 16)
    _, info = load_dit(tiny22.ti2v, task="ti2v")
    assert (info.task, info.in_channels, info.out_channels, info.vae_kind) == (
        "ti2v",
        48,
        48,
        "wan2.2",
    )
    with pytest.raises(WanloraError, match=r"is an image-to-video \(I2V\) DiT \(in_dim 36\)"):
        load_dit(tiny22.i2v_high)  # the default task is t2v
    with pytest.raises(WanloraError, match="TI2V-5B DiT .*needs an image-to-video") as error:
        load_dit(tiny22.ti2v, task="i2v")
    assert tiny22.ti2v.name in str(error.value)
    with pytest.raises(ValueError, match="task must be one of"):
        load_dit(tiny22.ti2v, task="t2i")
    load_dit(tiny22.ti2v, task=None)  # any Wan-layout DiT


def test_a_dit_of_no_known_task_is_named_by_its_channels(tiny22, tmp_path):
    # e.g. a Fun-Control 5B: 48 input channels but 16 output channels
    state = load_file(str(tiny22.i2v_high))
    state["patch_embedding.weight"] = torch.zeros(256, 48, 1, 2, 2, dtype=torch.float16)
    path = tmp_path / "control.safetensors"
    save_file(state, str(path))
    identity = identify_model(path)
    assert identity.variant is None
    assert identity.description == "a Wan-layout DiT with 48 input and 16 output channels"
    with pytest.raises(
        WanloraError, match="48 input and 16 output channels .*needs a Wan 2.2 TI2V"
    ):
        load_dit(path, task="ti2v")


# --- agreement with the official model -------------------------------------------------


def test_i2v_expert_reproduces_the_official_output(tiny22):
    fixture = official("wan22_i2v_official.safetensors", tiny22.i2v_high)
    model, _ = load_dit(tiny22.i2v_high, dtype=torch.float32, task="i2v")
    hidden = torch.cat([fixture["x"], fixture["y"]], dim=1)  # [x; y], as the official model
    context = padded_context(fixture["context"], fixture["context_lens"])
    with torch.no_grad():
        actual = model(hidden, fixture["t"], context).sample
    expected = fixture["output"]
    assert actual.shape == expected.shape == fixture["x"].shape  # 16 channels out
    assert expected.std() > 0.1
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_ti2v_reproduces_the_official_output_for_scalar_and_per_token_t(tiny22):
    fixture = official("wan22_ti2v_official.safetensors", tiny22.ti2v)
    model, _ = load_dit(tiny22.ti2v, dtype=torch.float32, task="ti2v")
    x, t = fixture["x"], fixture["t"]
    context = padded_context(fixture["context"], fixture["context_lens"])
    frames, height, width = x.shape[2:]
    tokens = ti2v_token_timesteps(t, frames, height, width)
    assert torch.equal(tokens, fixture["t_tokens"])  # the official construction
    all_equal = ti2v_token_timesteps(t, frames, height, width, clean_first_frame=False)
    with torch.no_grad():
        scalar = model(x, t, context).sample
        per_token = model(x, tokens, context).sample
        equal_tokens = model(x, all_equal, context).sample
    tolerance = {"rtol": 1e-4, "atol": 1e-4 * fixture["output_scalar_t"].abs().max()}
    torch.testing.assert_close(scalar, fixture["output_scalar_t"], **tolerance)
    torch.testing.assert_close(per_token, fixture["output_token_t"], **tolerance)
    # t on every token is the scalar t; t = 0 on frame 0 really changes the output
    torch.testing.assert_close(equal_tokens, scalar, rtol=1e-5, atol=1e-5)
    assert (per_token - scalar)[:, :, 0].abs().max() > 0.1
    assert (per_token - scalar)[:, :, 1:].abs().max() > 1e-3  # through attention


def test_ti2v_token_timesteps():
    t = torch.tensor([900.0, 10.0])
    tokens = ti2v_token_timesteps(t, latent_frames=3, latent_height=4, latent_width=6)
    assert tokens.shape == (2, 3 * 2 * 3)
    assert torch.equal(tokens[:, :6], torch.zeros(2, 6))  # latent frame 0: 2x3 tokens
    assert torch.equal(tokens[:, 6:], t[:, None].expand(2, 12))
    with pytest.raises(ValueError, match="even"):
        ti2v_token_timesteps(t, 3, 5, 6)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        ti2v_token_timesteps(tokens, 3, 4, 6)


# --- registry --------------------------------------------------------------------------


def test_registry_names_the_wan22_files():
    repo = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
    expected = {
        "wan22-i2v-high-fp16": ("dit", "diffusion_models/wan2.2_i2v_high_noise_14B_fp16"),
        "wan22-i2v-low-fp16": ("dit", "diffusion_models/wan2.2_i2v_low_noise_14B_fp16"),
        "wan22-ti2v-5b-fp16": ("dit", "diffusion_models/wan2.2_ti2v_5B_fp16"),
        "wan22-vae": ("vae", "vae/wan2.2_vae"),
    }
    for model_id, (kind, stem) in expected.items():
        model = MODEL_FILES[model_id]
        assert (model.kind, model.repo) == (kind, repo)
        assert model.files == (f"split_files/{stem}.safetensors",)
        assert model.approx_bytes > 10**9
