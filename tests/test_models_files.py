"""Wrong files are clear WanloraErrors naming the file and what it is; identify_model_file."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from wanlora.errors import WanloraError
from wanlora.models import (
    identify_model_file,
    load_dit,
    load_text_encoder,
    load_tokenizer,
    load_vae,
    write_tiny_models,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def dit_state(tiny):
    return load_file(str(tiny.dit_high))


def _save(state, path):
    save_file(state, str(path))
    return path


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(WanloraError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_identify_model_file(tiny, tmp_path):
    assert identify_model_file(tiny.dit_high) == "dit"
    assert identify_model_file(tiny.dit_low) == "dit"
    assert identify_model_file(tiny.vae) == "vae"
    assert identify_model_file(tiny.text_encoder) == "text_encoder"
    other = _save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "o.safetensors")
    assert identify_model_file(other) == "unknown"
    _raises("does not exist", identify_model_file, tmp_path / "nope.safetensors")


def test_vae_given_as_dit_names_the_file_and_what_it_is(tiny):
    message = _raises("is the Wan VAE, but a Wan DiT", load_dit, tiny.vae)
    assert str(tiny.vae) in message


def test_dit_given_as_vae(tiny):
    _raises("is a Wan DiT .* but the Wan VAE is expected", load_vae, tiny.dit_high)


def test_i2v_dit_is_refused_for_a_t2v_recipe(dit_state, tmp_path):
    state = dict(dit_state)
    state["patch_embedding.weight"] = torch.zeros(256, 36, 1, 2, 2, dtype=torch.float16)
    path = _save(state, tmp_path / "i2v.safetensors")
    message = _raises(r"image-to-video \(I2V\) DiT \(in_dim 36\)", load_dit, path)
    assert "i2v.safetensors" in message
    state["img_emb.proj.1.weight"] = torch.zeros(256, 64, dtype=torch.float16)
    _raises("image-to-video", load_dit, _save(state, tmp_path / "i2v_clip.safetensors"))


def test_truncated_download(tiny, tmp_path):
    data = tiny.dit_high.read_bytes()
    path = tmp_path / "partial.safetensors"
    path.write_bytes(data[: len(data) * 2 // 3])
    _raises("truncated", load_dit, path)
    path.write_bytes(data[:20])
    _raises("truncated|not a .safetensors", load_dit, path)
    path.write_bytes(b"")
    _raises("empty or truncated", load_dit, path)


def test_pickle_where_safetensors_is_expected(dit_state, tmp_path):
    path = tmp_path / "renamed.safetensors"
    torch.save(dict(dit_state), path)
    _raises("is a PyTorch pickle/.pth file, not a .safetensors file", load_dit, path)
    _raises("PyTorch pickle", load_vae, path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "page.safetensors"
    path.write_text("<html>404 not found</html>")
    _raises("not a .safetensors file", load_dit, path)


def test_wrong_shape(dit_state, tmp_path):
    state = dict(dit_state)
    state["blocks.1.self_attn.q.weight"] = torch.zeros(256, 128, dtype=torch.float16)
    path = _save(state, tmp_path / "bad.safetensors")
    _raises(r"blocks.1.attn1.to_q.weight has shape \(256, 128\), the model needs \(256, 256\)",
            load_dit, path)  # fmt: skip


def test_missing_and_unexpected_tensors(dit_state, tmp_path):
    state = dict(dit_state)
    del state["blocks.1.ffn.2.bias"]
    message = _raises("missing 1 tensor", load_dit, _save(state, tmp_path / "m.safetensors"))
    assert "blocks.1.ffn.2.bias" in message
    state = dict(dit_state)
    state["blocks.0.self_attn.extra.weight"] = torch.zeros(3, dtype=torch.float16)
    message = _raises("does not have", load_dit, _save(state, tmp_path / "u.safetensors"))
    assert "blocks.0.self_attn.extra.weight" in message


def test_scaled_fp8_is_refused(dit_state, tmp_path):
    state = dict(dit_state)
    state["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    _raises("scaled-fp8", load_dit, _save(state, tmp_path / "scaled.safetensors"))


def test_text_encoder_wrong_files(tiny, tmp_path):
    _raises(
        "is a .safetensors file, but a PyTorch .pth", load_text_encoder, tiny.vae, tiny.tokenizer
    )
    data = tiny.text_encoder.read_bytes()
    partial = tmp_path / "partial.pth"
    partial.write_bytes(data[: len(data) // 2])
    _raises("could not be read as a PyTorch file", load_text_encoder, partial, tiny.tokenizer)
    dit_pth = tmp_path / "dit.pth"
    torch.save(load_file(str(tiny.dit_high)), dit_pth)
    _raises("is a Wan DiT .* but the umT5 text encoder is expected",
            load_text_encoder, dit_pth, tiny.tokenizer)  # fmt: skip


def test_tokenizer_folder_errors(tiny, tmp_path):
    _raises("does not exist", load_tokenizer, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    _raises("not a usable tokenizer folder", load_tokenizer, tmp_path / "empty")
    # A tokenizer larger than the encoder's vocabulary cannot be used with it.
    big = tmp_path / "big"
    shutil.copytree(tiny.tokenizer, big)
    tokenizer = load_tokenizer(big)
    tokenizer.add_tokens([f"extra{i}" for i in range(1000)])
    _raises("tokenizer has", load_text_encoder, tiny.text_encoder, tokenizer)


def test_write_tiny_models_is_seeded(tiny, tmp_path):
    again = write_tiny_models(tmp_path / "again", seed=0)
    assert again.dit_high.read_bytes() == tiny.dit_high.read_bytes()
    assert again.vae.read_bytes() == tiny.vae.read_bytes()
    other = write_tiny_models(tmp_path / "other", seed=4)
    assert other.dit_high.read_bytes() != tiny.dit_high.read_bytes()
