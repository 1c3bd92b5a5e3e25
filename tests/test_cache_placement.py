"""Where the cache's models run (cache/placement.py): the GPU when they fit, else the CPU.

The rule is checked with numbers (free bytes, the training.max_vram_gb cap, the model's
bytes), every branch; the sizes are read off the real tiny model files; the wiring runs
`build_cache` and `encode_prompts` on CPU with a cap below the model's need, so the CUDA
device asked for is never touched and both fall back to the CPU, saying so.
"""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from cli_run import run_cli
from wanlora.cache.build import build_cache, load_cached_tensors, model_paths
from wanlora.cache.placement import (
    ENCODE_MARGIN_BYTES,
    GiB,
    choose_device,
    fallback_line,
    place_model,
)
from wanlora.demo import create_demo_project
from wanlora.models.files import loaded_bytes
from wanlora.models.text_encoder import load_umt5_encoder
from wanlora.recipes import load_project
from wanlora.sampling.sample import encode_prompts

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
UMT5_XXL = 11_400_000_000  # the bf16 .pth's size


def test_a_cpu_cache_stays_on_the_cpu_whatever_the_numbers():
    placement = choose_device(CPU, UMT5_XXL, free_bytes=None, cap_bytes=GiB)
    assert placement.device == CPU and not placement.fell_back and placement.room_bytes is None


def test_the_encoder_runs_on_the_gpu_when_it_fits_the_free_memory():
    placement = choose_device(CUDA, UMT5_XXL, free_bytes=40 * GiB, cap_bytes=None)
    assert placement.device == CUDA and not placement.fell_back
    assert placement.room_bytes == 40 * GiB and not placement.capped


def test_the_encoder_falls_back_to_the_cpu_on_a_small_card_and_says_so():
    placement = choose_device(CUDA, UMT5_XXL, free_bytes=int(7.5 * GiB), cap_bytes=None)
    assert placement.device == CPU and placement.fell_back and placement.wanted == CUDA
    assert fallback_line("text encoder", placement, "encoding 18 captions") == (
        "text encoder: 11.4 GB does not fit in 7.5 GiB free on cuda:0 "
        "-> encoding 18 captions on the CPU (slower)"
    )


def test_the_margin_is_part_of_the_need():
    room = UMT5_XXL + ENCODE_MARGIN_BYTES
    assert choose_device(CUDA, UMT5_XXL, free_bytes=room, cap_bytes=None).device == CUDA
    assert choose_device(CUDA, UMT5_XXL, free_bytes=room - 1, cap_bytes=None).device == CPU


def test_a_user_cap_counts_as_the_card_size():
    capped = choose_device(CUDA, UMT5_XXL, free_bytes=80 * GiB, cap_bytes=8 * GiB)
    assert capped.device == CPU and capped.capped and capped.room_bytes == 8 * GiB
    line = fallback_line("text encoder", capped, "encoding 18 captions")
    assert "does not fit in 8.0 GiB (training.max_vram_gb) on cuda:0" in line
    # a cap above the free memory: the free memory decides
    free_rules = choose_device(
        torch.device("cuda:1"), UMT5_XXL, free_bytes=6 * GiB, cap_bytes=16 * GiB
    )
    assert free_rules.device == CPU and not free_rules.capped and free_rules.room_bytes == 6 * GiB
    assert "6.0 GiB free on cuda:1" in fallback_line("VAE", free_rules, "encoding 3 image(s)")
    # a cap that holds it, on a card with the room
    assert choose_device(CUDA, UMT5_XXL, free_bytes=80 * GiB, cap_bytes=16 * GiB).device == CUDA
    # the card's free memory not known (not asked: the cap alone decided)
    assert choose_device(CUDA, UMT5_XXL, free_bytes=None, cap_bytes=12 * GiB).device == CUDA
    assert choose_device(CUDA, UMT5_XXL, free_bytes=None, cap_bytes=8 * GiB).device == CPU


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement") / "project"
    create_demo_project(root, epochs=1)
    return root


@pytest.fixture
def project(template, tmp_path):
    shutil.copytree(template, tmp_path / "p")
    return load_project(tmp_path / "p")


def test_model_sizes_are_read_off_the_files_as_loaded(project, tmp_path):
    paths = model_paths(project)
    encoder = load_umt5_encoder(paths["text_encoder"], dtype=torch.bfloat16)
    loaded = sum(p.numel() * p.element_size() for p in encoder.parameters())
    assert loaded_bytes(paths["text_encoder"], torch.bfloat16) == loaded
    assert loaded_bytes(paths["text_encoder"], torch.float32) == 2 * loaded
    vae = load_file(paths["vae"])
    assert loaded_bytes(paths["vae"], torch.bfloat16) == sum(t.numel() * 2 for t in vae.values())
    # an old raw-pickle .pth is not memory-mappable: its file size stands in
    old = tmp_path / "old.pth"
    torch.save({"w": torch.zeros(10, 10)}, old, _use_new_zipfile_serialization=False)
    assert loaded_bytes(old, torch.bfloat16) == old.stat().st_size


def test_a_cache_on_the_cpu_runs_its_models_there_silently(project, caplog):
    project.config.training.max_vram_gb = 8.0  # only a GPU's memory is capped
    with caplog.at_level(logging.INFO, logger="wanlora"):
        result = build_cache(project, device=CPU)
    assert result.devices == {"vae": "cpu", "text_encoder": "cpu"}
    assert "(slower)" not in caplog.text


def test_a_cache_over_the_cap_encodes_on_the_cpu_and_says_so(project, caplog):
    """Asked for the GPU with a cap below the models' need: both fall back before any CUDA
    call (the cap alone decides), the cache is complete, and the lines say why."""
    project.config.training.max_vram_gb = 0.5  # below the margin alone
    with caplog.at_level(logging.INFO, logger="wanlora"):
        result = build_cache(project, device=CUDA)
    assert result.devices == {"vae": "cpu", "text_encoder": "cpu"}
    assert result.texts_computed == 18 and result.latents_computed == 18
    assert len(load_cached_tensors(result.entries)) == 18
    lines = [r.getMessage() for r in caplog.records if "(slower)" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("VAE: 0.0 GB does not fit in 0.5 GiB (training.max_vram_gb)")
    assert lines[1].startswith("text encoder: 0.0 GB does not fit in 0.5 GiB")
    assert lines[1].endswith("on cuda:0 -> encoding 18 captions on the CPU (slower)")


def test_sample_prompts_follow_the_same_rule(project, caplog):
    project.config.training.max_vram_gb = 0.5
    prompts = ["a red cube", "a blue sphere"]
    with caplog.at_level(logging.INFO, logger="wanlora"):
        fell_back = encode_prompts(project, prompts, CUDA)
    assert "encoding 2 sample prompts on the CPU (slower)" in caplog.text
    on_cpu = encode_prompts(project, prompts, CPU)
    assert all(torch.equal(a, b) for a, b in zip(fell_back, on_cpu, strict=True))
    assert place_model(model_paths(project)["text_encoder"], torch.bfloat16, CPU, 0.5).device == CPU


def test_cli_cache_with_max_vram_encodes_on_the_cpu(project):
    """`wanlora cache --device cuda --max-vram 0.5` on this CPU machine: the cap alone sends
    both models to the CPU (no CUDA call), and the line says so."""
    shutil.rmtree(project.cache_dir, ignore_errors=True)
    done = run_cli("cache", str(project.root), "--device", "cuda", "--max-vram", "0.5")
    assert done.returncode == 0, done.stderr
    assert "encoding 18 captions on the CPU (slower)" in done.stderr
    assert "text 18 computed" in done.stdout
