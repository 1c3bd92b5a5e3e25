"""DiT loader: key mapping against the real 14B layout, and numerical agreement of the loaded
diffusers model with an independent forward of the original Wan architecture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from diffusers.models.embeddings import Timesteps
from safetensors.torch import load_file, save_file

import wanlora.models
from wanlora.models import load_dit, write_tiny_models
from wanlora.models.assign import build_on_meta
from wanlora.models.dit import (
    diffusers_key_to_wan,
    dit_info_from_shapes,
    wan_key_to_diffusers,
)
from wanlora.models.time_embedding import Float64TimestepProjection

LAYOUTS = Path(wanlora.models.__file__).parent / "layouts"
TIME_PARAMETERS = ("condition_embedder.time_embedder.", "condition_embedder.time_proj.")


def storage_dtypes(model) -> set[torch.dtype]:
    """Dtypes of all parameters but the time path (always float32, checked separately)."""
    return {p.dtype for n, p in model.named_parameters() if not n.startswith(TIME_PARAMETERS)}


def time_dtypes(model) -> set[torch.dtype]:
    return {p.dtype for n, p in model.named_parameters() if n.startswith(TIME_PARAMETERS)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("tiny"))


def real_dit_layout() -> dict[str, tuple[int, ...]]:
    data = json.loads((LAYOUTS / "dit_wan22_t2v_a14b_expert.json").read_text())
    return {name: tuple(shape) for name, shape in data["tensors"].items()}


# --- key mapping -------------------------------------------------------------------------


def test_real_14b_layout_maps_one_to_one_onto_diffusers_with_matching_shapes():
    layout = real_dit_layout()
    info = dit_info_from_shapes(Path("x"), {n: (torch.float16, s) for n, s in layout.items()})
    assert (info.dim, info.num_heads, info.num_layers, info.ffn_dim) == (5120, 40, 40, 13824)
    assert (info.in_channels, info.out_channels, info.text_dim, info.freq_dim) == (
        16,
        16,
        4096,
        256,
    )
    assert info.patch_size == (1, 2, 2)
    assert info.compute_dtype == torch.float16
    model = build_on_meta(lambda: WanTransformer3DModel(**info.diffusers_config()))
    model_shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}

    mapped = {name: wan_key_to_diffusers(name) for name in layout}
    assert None not in mapped.values()
    assert len(set(mapped.values())) == len(mapped)  # injective
    assert set(mapped.values()) == set(model_shapes)  # every diffusers parameter covered
    for name, ours in mapped.items():
        assert model_shapes[ours] == layout[name], name
        assert diffusers_key_to_wan(ours) == name  # the other direction
        assert wan_key_to_diffusers("model.diffusion_model." + name) == ours


def test_mapping_agrees_with_diffusers_own_converter(tiny):
    state = load_file(str(tiny.dit_high))
    theirs = convert_wan_transformer_to_diffusers(dict(state))
    ours = {wan_key_to_diffusers(n): t for n, t in state.items()}
    assert set(theirs) == set(ours)
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name


def test_tiny_file_has_exactly_the_real_key_names():
    layout = real_dit_layout()
    tiny_names = set(wanlora.models.tiny.tiny_dit_layout())
    real_first_two_blocks = {
        n for n in layout if not n.startswith("blocks.") or int(n.split(".")[1]) < 2
    }
    assert tiny_names == real_first_two_blocks


def test_unknown_keys_do_not_map():
    assert wan_key_to_diffusers("blocks.0.self_attn.x.weight") is None
    assert wan_key_to_diffusers("img_emb.proj.0.weight") is None
    assert diffusers_key_to_wan("condition_embedder.image_embedder.norm1.weight") is None


# --- loading ------------------------------------------------------------------------------


def test_load_tiny_dit_infers_architecture_and_keeps_file_values(tiny):
    model, info = load_dit(tiny.dit_high)
    assert (info.dim, info.num_heads, info.num_layers, info.ffn_dim, info.text_dim) == (
        256,
        2,
        2,
        512,
        64,
    )
    assert info.file_dtype == torch.float16 and info.compute_dtype == torch.float16
    state = load_file(str(tiny.dit_high))
    params = dict(model.named_parameters())
    assert len(params) == len(state)
    for name, tensor in state.items():
        loaded = params[wan_key_to_diffusers(name)]
        assert not loaded.requires_grad
        assert torch.equal(loaded, tensor.to(loaded.dtype)), name
    assert storage_dtypes(model) == {torch.float16}
    assert time_dtypes(model) == {torch.float32}
    assert isinstance(model.condition_embedder.timesteps_proj, Float64TimestepProjection)
    assert not model.training


def test_high_and_low_experts_differ(tiny):
    high = load_file(str(tiny.dit_high))
    low = load_file(str(tiny.dit_low))
    assert high.keys() == low.keys()
    assert not torch.equal(high["blocks.0.self_attn.q.weight"], low["blocks.0.self_attn.q.weight"])


def test_comfy_prefix_is_stripped(tiny, tmp_path):
    state = load_file(str(tiny.dit_high))
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({"model.diffusion_model." + n: t for n, t in state.items()}, str(prefixed))
    model, _ = load_dit(prefixed)
    reference, _ = load_dit(tiny.dit_high)
    for (n1, p1), (n2, p2) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)


def test_bf16_file_decides_bf16_compute(tiny, tmp_path):
    state = load_file(str(tiny.dit_high))
    path = tmp_path / "bf16.safetensors"
    save_file({n: t.to(torch.bfloat16) for n, t in state.items()}, str(path))
    model, info = load_dit(path)
    assert info.file_dtype == info.compute_dtype == torch.bfloat16
    assert storage_dtypes(model) == {torch.bfloat16}


def test_fp8_file_keeps_fp8_and_leaves_compute_dtype_to_mixed_precision(tiny, tmp_path):
    state = load_file(str(tiny.dit_high))
    # As in ComfyUI's fp8 files: big matrices in fp8, small vectors in fp16.
    fp8_state = {n: t.to(torch.float8_e4m3fn) if t.ndim >= 2 else t for n, t in state.items()}
    path = tmp_path / "fp8.safetensors"
    save_file(fp8_state, str(path))
    model, info = load_dit(path)
    assert info.file_dtype == torch.float8_e4m3fn and info.compute_dtype is None
    assert storage_dtypes(model) == {torch.float8_e4m3fn}
    assert time_dtypes(model) == {torch.float32}
    model16, _ = load_dit(path, dtype=torch.float16)
    q = model16.blocks[0].attn1.to_q.weight
    assert q.dtype == torch.float16
    assert torch.equal(q, fp8_state["blocks.0.self_attn.q.weight"].to(torch.float16))


def test_fp8_round_rounds_every_tensor_through_fp8(tiny):
    state = load_file(str(tiny.dit_high))
    model, _ = load_dit(tiny.dit_high, fp8_round=True)
    params = dict(model.named_parameters())
    changed = 0
    for name, tensor in state.items():
        loaded = params[wan_key_to_diffusers(name)]
        expected = tensor.to(torch.float8_e4m3fn).to(loaded.dtype)
        assert torch.equal(loaded, expected), name
        changed += not torch.equal(loaded, tensor)
    assert changed == len(state)  # rounding really happened
    assert storage_dtypes(model) == {torch.float16}
    model8, _ = load_dit(tiny.dit_high, dtype=torch.float8_e4m3fn)
    assert storage_dtypes(model8) == {torch.float8_e4m3fn}
    assert torch.equal(
        model8.condition_embedder.time_proj.weight, model.condition_embedder.time_proj.weight
    )
    assert torch.equal(
        model8.blocks[1].ffn.net[2].weight.to(torch.float16), model.blocks[1].ffn.net[2].weight
    )


# --- time embedding ------------------------------------------------------------------------


def wan_sinusoidal_embedding_1d(dim: int, position: torch.Tensor) -> torch.Tensor:
    """The original Wan formula (float64)."""
    half = dim // 2
    position = position.type(torch.float64)
    sinusoid = torch.outer(position, torch.pow(10000, -torch.arange(half).to(position).div(half)))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def test_float64_timestep_projection_matches_wan_exactly_and_diffusers_closely():
    timesteps = torch.tensor([1.0, 123.4, 875.0, 999.0, 1001.0])
    ours = Float64TimestepProjection(256)(timesteps)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, wan_sinusoidal_embedding_1d(256, timesteps).float())
    theirs = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)(timesteps)
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=0)
    assert not torch.equal(ours, theirs)  # float32 vs float64: why we replace it


def test_time_path_is_float32_for_fp16_weights_even_under_autocast(tiny):
    model, info = load_dit(tiny.dit_high)  # fp16 weights
    sd = {n: t.float() for n, t in load_file(str(tiny.dit_high)).items()}
    t = torch.tensor([876.0, 1.0])
    e = wan_sinusoidal_embedding_1d(info.freq_dim, t).float()
    e = F.linear(e, sd["time_embedding.0.weight"], sd["time_embedding.0.bias"])
    e = F.linear(F.silu(e), sd["time_embedding.2.weight"], sd["time_embedding.2.bias"])
    e0 = F.linear(F.silu(e), sd["time_projection.1.weight"], sd["time_projection.1.bias"])
    context = torch.zeros(2, 512, info.text_dim, dtype=torch.float16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        temb, timestep_proj, text, _ = model.condition_embedder(t, context)
    assert temb.dtype == timestep_proj.dtype == torch.float32
    torch.testing.assert_close(temb, e)
    torch.testing.assert_close(timestep_proj, e0)
    assert text.shape == (2, 512, info.dim)
    names = {n for n, _ in model.named_parameters()}
    assert "condition_embedder.time_embedder.linear_1.weight" in names


# --- independent reference forward ---------------------------------------------------------


def rope_params(max_seq_len: int, dim: int, theta: float = 10000.0) -> torch.Tensor:
    freqs = torch.outer(
        torch.arange(max_seq_len),
        1.0 / torch.pow(theta, torch.arange(0, dim, 2).to(torch.float64).div(dim)),
    )
    return torch.polar(torch.ones_like(freqs), freqs)


def rope_apply(x: torch.Tensor, grid: tuple[int, int, int], freqs: torch.Tensor) -> torch.Tensor:
    """x: (B, S, heads, head_dim); rotate pairs of channels by frame/row/column angles."""
    b, s, n, d = x.shape
    c = d // 2
    f, h, w = grid
    parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    angles = torch.cat(
        [
            parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(s, 1, -1)
    x_complex = torch.view_as_complex(x.to(torch.float64).reshape(b, s, n, -1, 2))
    return torch.view_as_real(x_complex * angles).flatten(3).float()


def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def attention(q, k, v, heads):
    b, s, _ = q.shape
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, s, -1)


def wan_reference_forward(sd, x, t, context, heads):
    """The original Wan T2V DiT forward, written from the original-layout state dict."""

    def linear(inp, name):
        return F.linear(inp, sd[f"{name}.weight"], sd[f"{name}.bias"])

    dim = sd["patch_embedding.weight"].shape[0]
    patch = sd["patch_embedding.weight"].shape[2:]
    head_dim = dim // heads
    freqs = torch.cat(
        [
            rope_params(1024, head_dim - 4 * (head_dim // 6)),
            rope_params(1024, 2 * (head_dim // 6)),
            rope_params(1024, 2 * (head_dim // 6)),
        ],
        dim=1,
    )
    # patch embedding
    x = F.conv3d(x, sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=patch)
    grid = tuple(x.shape[2:])
    x = x.flatten(2).transpose(1, 2)
    # time embedding and projection
    freq_dim = sd["time_embedding.0.weight"].shape[1]
    e = wan_sinusoidal_embedding_1d(freq_dim, t).float()
    e = linear(F.silu(linear(e, "time_embedding.0")), "time_embedding.2")
    e0 = linear(F.silu(e), "time_projection.1").unflatten(1, (6, dim))
    # text embedding
    context = linear(
        F.gelu(linear(context, "text_embedding.0"), approximate="tanh"), "text_embedding.2"
    )
    num_layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(num_layers):
        p = f"blocks.{i}."
        mod = (sd[p + "modulation"] + e0).chunk(6, dim=1)
        # self-attention with qk RMS norm and 3D RoPE
        y = F.layer_norm(x, (dim,), eps=1e-6) * (1 + mod[1]) + mod[0]
        q = rms_norm(linear(y, p + "self_attn.q"), sd[p + "self_attn.norm_q.weight"])
        k = rms_norm(linear(y, p + "self_attn.k"), sd[p + "self_attn.norm_k.weight"])
        v = linear(y, p + "self_attn.v")
        b, s, _ = q.shape
        q = rope_apply(q.view(b, s, heads, -1), grid, freqs).flatten(2)
        k = rope_apply(k.view(b, s, heads, -1), grid, freqs).flatten(2)
        y = linear(attention(q, k, v, heads), p + "self_attn.o")
        x = x + y * mod[2]
        # cross-attention (norm3 is the affine cross-attention norm)
        y = F.layer_norm(x, (dim,), sd[p + "norm3.weight"], sd[p + "norm3.bias"], eps=1e-6)
        q = rms_norm(linear(y, p + "cross_attn.q"), sd[p + "cross_attn.norm_q.weight"])
        k = rms_norm(linear(context, p + "cross_attn.k"), sd[p + "cross_attn.norm_k.weight"])
        v = linear(context, p + "cross_attn.v")
        x = x + linear(attention(q, k, v, heads), p + "cross_attn.o")
        # feed-forward
        y = F.layer_norm(x, (dim,), eps=1e-6) * (1 + mod[4]) + mod[3]
        y = linear(F.gelu(linear(y, p + "ffn.0"), approximate="tanh"), p + "ffn.2")
        x = x + y * mod[5]
    # head
    shift, scale = (sd["head.modulation"] + e.unsqueeze(1)).chunk(2, dim=1)
    x = linear(F.layer_norm(x, (dim,), eps=1e-6) * (1 + scale) + shift, "head.head")
    # unpatchify
    c = x.shape[-1] // math.prod(patch)
    out = []
    for u in x:
        u = u.view(*grid, *patch, c)
        u = torch.einsum("fhwpqrc->cfphqwr", u)
        out.append(u.reshape(c, *[g * q for g, q in zip(grid, patch, strict=True)]))
    return torch.stack(out)


def test_diffusers_model_matches_independent_wan_forward(tiny):
    sd = {n: t.float() for n, t in load_file(str(tiny.dit_high)).items()}
    model, info = load_dit(tiny.dit_high, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 16, 2, 6, 8, generator=generator)
    timesteps = torch.tensor([876.0, 251.5])
    # Like training: each prompt's rows, then zero rows up to 512.
    context = torch.zeros(2, 512, info.text_dim)
    context[0, :7] = torch.randn(7, info.text_dim, generator=generator)
    context[1, :20] = torch.randn(20, info.text_dim, generator=generator)

    expected = wan_reference_forward(sd, latents, timesteps, context, info.num_heads)
    with torch.no_grad():
        actual = model(latents, timesteps, context).sample
    assert actual.shape == latents.shape
    assert expected.std() > 0.1  # not degenerate
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)

    # The model really depends on each input.
    with torch.no_grad():
        other_t = model(latents, timesteps + 100, context).sample
        other_ctx = model(latents, timesteps, context * 0.5).sample
    assert (other_t - actual).abs().max() > 1e-3
    assert (other_ctx - actual).abs().max() > 1e-3


def test_fp16_forward_is_finite_and_close_to_fp32(tiny):
    model16, _ = load_dit(tiny.dit_low)
    model32, _ = load_dit(tiny.dit_low, dtype=torch.float32)
    latents = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 512, 64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([500.0])
    with torch.no_grad():
        out16 = model16(latents.half(), t, context.half()).sample
        out32 = model32(latents, t, context).sample
    assert out16.dtype == torch.float16 and torch.isfinite(out16).all()
    torch.testing.assert_close(out16.float(), out32, atol=2e-2, rtol=2e-2)
