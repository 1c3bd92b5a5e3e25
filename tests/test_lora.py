"""LoRA targets, names, init, scale and file format against TRAINER_SPEC section 6."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel

from wanlora.lora.file import read_lora_file, save_lora_file
from wanlora.lora.inject import (
    add_lora,
    load_lora_state_dict,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    lora_target_modules,
    set_lora_multiplier,
)
from wanlora.lora.keys import saved_module_name
from wanlora.recipes.schema import LoraSettings


def tiny_dit(layers: int = 2) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=96,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
    )


def inputs(batch: int = 1):
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(batch, 16, 1, 8, 8, generator=g),
        timestep=torch.tensor([500.0] * batch),
        encoder_hidden_states=torch.randn(batch, 12, 32, generator=g),
        return_dict=False,
    )


def test_ten_targets_per_block_nothing_outside():
    model = tiny_dit(layers=3)
    targets = add_lora(model, LoraSettings(network_dim=4, network_alpha=4))
    assert len(targets) == 30
    names = sorted({saved_module_name(t).split("_", 4)[-1] for t in targets})
    assert names == sorted(
        ["self_attn_q", "self_attn_k", "self_attn_v", "self_attn_o"]
        + ["cross_attn_q", "cross_attn_k", "cross_attn_v", "cross_attn_o", "ffn_0", "ffn_2"]
    )
    assert all(t.startswith("blocks.") for t in targets)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if ".lora_A." in n or ".lora_B." in n}
    assert len(trainable) == 60


def test_saved_names_match_the_reference():
    assert saved_module_name("blocks.0.attn1.to_q") == "lora_unet_blocks_0_self_attn_q"
    assert saved_module_name("blocks.12.attn2.to_out.0") == "lora_unet_blocks_12_cross_attn_o"
    assert saved_module_name("blocks.3.ffn.net.0.proj") == "lora_unet_blocks_3_ffn_0"
    assert saved_module_name("blocks.3.ffn.net.2") == "lora_unet_blocks_3_ffn_2"
    with pytest.raises(ValueError):
        saved_module_name("condition_embedder.time_proj")


def test_init_is_kaiming_down_zero_up_float32():
    model = tiny_dit()
    add_lora(model, LoraSettings(network_dim=8, network_alpha=8))
    for layer in lora_layers(model).values():
        down, up = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert down.dtype == up.dtype == torch.float32
        assert torch.count_nonzero(up) == 0
        bound = 1 / math.sqrt(down.shape[1])  # kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
        assert down.abs().max() <= bound and down.abs().max() > 0.5 * bound
    # zero up => the model's output is unchanged at init
    base = tiny_dit()
    with torch.no_grad():
        assert torch.equal(model(**inputs())[0], base(**inputs())[0])


def test_output_is_base_plus_up_down_times_alpha_over_rank():
    model = tiny_dit()
    add_lora(model, LoraSettings(network_dim=4, network_alpha=2))
    layer = lora_layers(model)["blocks.0.attn1.to_q"]
    torch.nn.init.normal_(layer.lora_B["default"].weight)
    x = torch.randn(3, layer.base_layer.in_features)
    down, up = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = layer.base_layer(x) + x @ down.T @ up.T * (2 / 4)
    torch.testing.assert_close(layer(x), expected)
    set_lora_multiplier(model, 0.5)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ down.T @ up.T * 0.5 * (2 / 4))


def test_saved_key_set_shapes_dtype_and_round_trip(tmp_path):
    model = tiny_dit()
    add_lora(model, LoraSettings(network_dim=4, network_alpha=4))
    for p in lora_parameters(model):
        torch.nn.init.normal_(p)
    tensors = lora_state_dict(model, alpha=4.0, dtype=torch.float16)
    assert len(tensors) == 2 * 10 * 3
    assert tensors["lora_unet_blocks_1_ffn_0.lora_down.weight"].shape == (4, 64)
    assert tensors["lora_unet_blocks_1_ffn_0.lora_up.weight"].shape == (96, 4)
    assert tensors["lora_unet_blocks_1_ffn_0.alpha"].item() == 4.0
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    path = tmp_path / "x.safetensors"
    save_lora_file(path, tensors, {"modelspec.title": "T"})
    loaded, meta = read_lora_file(path)
    assert meta["modelspec.title"] == "T" and len(meta["sshs_model_hash"]) == 64
    other = tiny_dit()
    add_lora(other, LoraSettings(network_dim=4, network_alpha=4))
    load_lora_state_dict(other, loaded)
    for a, b in zip(lora_parameters(model), lora_parameters(other), strict=True):
        torch.testing.assert_close(a.half().float(), b)


def test_diffusers_loader_accepts_our_file(tmp_path):
    """diffusers' Wan LoRA loader reads our key format and gives the same outputs."""
    model = tiny_dit()
    add_lora(model, LoraSettings(network_dim=4, network_alpha=2))
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.05)
    path = tmp_path / "lora.safetensors"
    save_lora_file(path, lora_state_dict(model, alpha=2.0, dtype=torch.float32), {})
    state_dict = WanPipeline.lora_state_dict(str(path))
    plain = tiny_dit()
    plain.load_lora_adapter(state_dict, prefix="transformer", adapter_name="ours")
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs())[0], model(**inputs())[0], rtol=1e-4, atol=1e-5)


def comfyui_key_map(model_keys):
    """ComfyUI's documented rule for Wan LoRAs: every `diffusion_model.<path>.weight` of the
    loaded model is reachable as `lora_unet_<path with dots replaced by underscores>`."""
    key_map = {}
    for k in model_keys:
        if k.startswith("diffusion_model.") and k.endswith(".weight"):
            key_map[
                "lora_unet_" + k[len("diffusion_model.") : -len(".weight")].replace(".", "_")
            ] = k
    return key_map


def test_comfyui_maps_every_module_of_a_14b_lora_onto_the_real_file():
    """Our 400 module names for the 14B expert all land on weights of the real DiT layout
    (ComfyUI loads the DiT with a `diffusion_model.` prefix), with matching shapes."""
    import json
    from importlib import resources

    from wanlora.models.assign import build_on_meta

    layout = json.loads(
        resources.files("wanlora.models")
        .joinpath("layouts/dit_wan22_t2v_a14b_expert.json")
        .read_text()
    )["tensors"]
    key_map = comfyui_key_map("diffusion_model." + k for k in layout)
    model = build_on_meta(
        lambda: WanTransformer3DModel(
            num_attention_heads=40,
            attention_head_dim=128,
            ffn_dim=13824,
            num_layers=40,
            text_dim=4096,
        )
    )
    targets = lora_target_modules(model)
    assert len(targets) == 400
    for name in targets:
        stem = saved_module_name(name)
        assert stem in key_map, stem
        out_features, in_features = layout[key_map[stem][len("diffusion_model.") :]]
        module = model.get_submodule(name)
        assert (module.out_features, module.in_features) == (out_features, in_features)


def test_comfyui_maps_every_module_of_a_5b_lora_onto_the_real_file():
    """The TI2V-5B LoRA's 300 modules (30 blocks) land on the real 5B layout's weights."""
    import json
    from importlib import resources

    from wanlora.models.assign import build_on_meta

    layout = json.loads(
        resources.files("wanlora.models").joinpath("layouts/dit_wan22_ti2v_5b.json").read_text()
    )["tensors"]
    key_map = comfyui_key_map("diffusion_model." + k for k in layout)
    model = build_on_meta(
        lambda: WanTransformer3DModel(
            num_attention_heads=24,
            attention_head_dim=128,
            in_channels=48,
            out_channels=48,
            ffn_dim=14336,
            num_layers=30,
            text_dim=4096,
        )
    )
    targets = lora_target_modules(model)
    assert len(targets) == 300
    for name in targets:
        stem = saved_module_name(name)
        assert stem in key_map, stem
        out_features, in_features = layout[key_map[stem][len("diffusion_model.") :]]
        module = model.get_submodule(name)
        assert (module.out_features, module.in_features) == (out_features, in_features)
