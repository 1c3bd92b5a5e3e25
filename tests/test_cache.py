"""Latent and text caches: reuse, invalidation by content, stale removal, corruption."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from wanlora.cache.build import build_cache, load_cached_tensors
from wanlora.dataset.images import load_bucketed_image
from wanlora.demo import create_demo_project
from wanlora.errors import WanloraError
from wanlora.models import encode_latents, load_text_encoder, load_vae
from wanlora.recipes import load_project

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache") / "project"
    create_demo_project(root, epochs=1)
    build_cache(load_project(root), device=CPU)  # copies start with a complete cache
    return root


@pytest.fixture
def project(template, tmp_path):
    shutil.copytree(template, tmp_path / "p")
    return load_project(tmp_path / "p")


def test_first_build_computes_everything_then_reuses(project):
    shutil.rmtree(project.cache_dir)
    first = build_cache(project, device=CPU)
    assert (first.latents_computed, first.latents_reused) == (18, 0)
    assert first.texts_computed == 18 and first.texts_reused == 0
    again = build_cache(project, device=CPU)
    assert (again.latents_computed, again.latents_reused) == (0, 18)
    assert (again.texts_computed, again.texts_reused) == (0, 18)
    assert again.removed == []


def test_one_changed_caption_and_one_changed_image_are_recomputed(project):
    caption = project.dataset_dir / "demo_03.txt"
    caption.write_text(caption.read_text() + " A new sentence.", encoding="utf-8")
    image_path = project.dataset_dir / "demo_07.png"
    image = Image.open(image_path).convert("RGB")
    image.putpixel((0, 0), (1, 2, 3))
    image.save(image_path)
    result = build_cache(project, device=CPU)
    assert (result.latents_computed, result.texts_computed) == (1, 1)
    assert (result.latents_reused, result.texts_reused) == (17, 17)
    assert len(result.removed) == 2  # the old latent and the old text entry
    assert all(not p.exists() for p in result.removed)


def test_cached_values_are_the_encoders_outputs(project):
    result = build_cache(project, device=CPU)
    entry = result.entries[5]
    latents, context = load_cached_tensors([entry])[0]
    paths = project.config.models
    vae = load_vae(project.root / paths.vae, dtype=torch.bfloat16)
    expected = encode_latents(vae, load_bucketed_image(entry.item.image_path, entry.item.bucket))[0]
    assert latents.dtype == torch.bfloat16 and torch.equal(latents, expected)
    w, h = entry.item.bucket
    assert latents.shape == (16, 1, h // 8, w // 8)
    encoder = load_text_encoder(project.root / paths.text_encoder, project.root / paths.tokenizer)
    assert torch.equal(context, encoder.encode([entry.item.caption])[0])


def test_a_corrupt_entry_is_recomputed_not_used(project):
    result = build_cache(project, device=CPU)
    victim = result.entries[2].latent_path
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated
    text = result.entries[4].text_path
    raw = bytearray(text.read_bytes())
    raw[-3] ^= 0xFF  # one flipped bit in the tensor bytes
    text.write_bytes(bytes(raw))
    again = build_cache(project, device=CPU)
    assert again.latents_computed == 1 and again.texts_computed == 1
    load_cached_tensors(again.entries)  # all verify now


def test_another_entrys_file_copied_over_an_entry_is_recomputed(project):
    result = build_cache(project, device=CPU)
    a, b = result.entries[0].latent_path, result.entries[1].latent_path
    a.write_bytes(b.read_bytes())  # a valid file, but the wrong image's latents
    again = build_cache(project, device=CPU)
    assert again.latents_computed == 1 and again.latents_reused == 17


def test_a_changed_vae_file_invalidates_latents_only(project):
    from safetensors.torch import load_file, save_file

    vae_path = project.root / project.config.models.vae
    tensors = load_file(str(vae_path))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key] * 1.01
    save_file(tensors, str(vae_path))
    result = build_cache(project, device=CPU)
    assert result.latents_computed == 18 and result.texts_computed == 0


def test_missing_model_file_is_a_clear_error(project):
    (project.root / project.config.models.vae).unlink()
    with pytest.raises(WanloraError, match="VAE not found.*wanlora download"):
        build_cache(project, device=CPU)
