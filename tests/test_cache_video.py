"""Clip latents in the cache: real videos, the tiny real VAE, reuse and invalidation."""

from __future__ import annotations

import shutil

import pytest
import torch

from video_files import write_h264, write_lossless
from wanlora.cache.build import build_cache, load_cached_tensors
from wanlora.dataset.video_frames import load_clip_frames
from wanlora.demo import create_demo_project
from wanlora.models import encode_latents, encode_video_latents, load_vae
from wanlora.recipes import load_project

CPU = torch.device("cpu")
FRAME_KEYS = 'target_frames = [1, 5]\nframe_extraction = "head"\nsource_fps = 30.0\n'


def set_frame_keys(root, keys: str) -> None:
    config = root / "wanlora.toml"
    text = config.read_text()
    start = text.index("[dataset]\n") + len("[dataset]\n")
    end = text.index("\n[", start)
    config.write_text(text[:start] + "resolution = [32, 32]\n" + keys + text[end:])


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The demo project's tiny models with two videos instead of its images."""
    root = tmp_path_factory.mktemp("cache-video") / "project"
    create_demo_project(root, epochs=1)
    folder = root / "dataset"
    for path in folder.iterdir():
        path.unlink()
    write_h264(folder / "walk.mp4", 12, fps=30, size=(64, 16))  # 12 -> 6 frames at 16 fps
    (folder / "walk.txt").write_text("a walk")
    write_lossless(folder / "turn.mkv", 9, fps=30, size=(32, 32))  # 9 -> 5 frames
    (folder / "turn.txt").write_text("a turn")
    set_frame_keys(root, FRAME_KEYS)
    build_cache(load_project(root), device=CPU)
    return root


@pytest.fixture
def project(template, tmp_path):
    shutil.copytree(template, tmp_path / "p")
    return load_project(tmp_path / "p")


def clip_names(result):
    return [e.item.name for e in result.entries]


def test_every_clip_gets_a_latent_of_its_length(project):
    shutil.rmtree(project.cache_dir)
    result = build_cache(project, device=CPU)
    assert clip_names(result) == [
        "turn_00000-001",
        "turn_00000-005",
        "walk_00000-001",
        "walk_00000-005",
    ]
    assert (result.latents_computed, result.texts_computed) == (4, 2)
    vae = load_vae(project.root / project.config.models.vae, dtype=torch.bfloat16)
    for entry in result.entries[1:]:
        ((latents, _),) = load_cached_tensors([entry])
        w, h = entry.item.bucket
        assert latents.shape == (16, 1 + (entry.item.frames - 1) // 4, h // 8, w // 8)
        frames = load_clip_frames(entry.item.clip, entry.item.bucket)
        assert torch.equal(latents, encode_video_latents(vae, frames)[0])
    # a 1-frame clip is encoded exactly like an image of that frame
    one = result.entries[2]
    ((latents, _),) = load_cached_tensors([one])
    frame = load_clip_frames(one.item.clip, one.item.bucket)[0]
    assert torch.equal(latents, encode_latents(vae, frame)[0])


def test_unchanged_clips_are_reused(project):
    again = build_cache(project, device=CPU)
    assert (again.latents_computed, again.latents_reused, again.removed) == (0, 4, [])


def test_a_changed_video_recomputes_only_its_clips(project):
    write_lossless(project.dataset_dir / "turn.mkv", 9, fps=30, size=(40, 40))  # new content
    result = build_cache(project, device=CPU)
    assert (result.latents_computed, result.latents_reused) == (2, 2)
    assert len(result.removed) == 2 and all(not p.exists() for p in result.removed)


def test_changed_clip_ranges_recompute_only_the_new_ranges(project):
    set_frame_keys(project.root, FRAME_KEYS.replace("[1, 5]", "[5]"))
    fewer = build_cache(load_project(project.root), device=CPU)
    assert (fewer.latents_computed, fewer.latents_reused, len(fewer.removed)) == (0, 2, 2)
    set_frame_keys(project.root, FRAME_KEYS.replace("[1, 5]", "[5]").replace("head", "slide"))
    slide = build_cache(load_project(project.root), device=CPU)
    # turn (5 frames) from 0; walk (6 frames) from 0 and, sliding, from 1: one new clip
    assert clip_names(slide) == ["turn_00000-005", "walk_00000-005", "walk_00001-005"]
    assert (slide.latents_computed, slide.latents_reused) == (1, 2)
    set_frame_keys(project.root, FRAME_KEYS.replace("30.0", "24.0"))
    other_rate = build_cache(load_project(project.root), device=CPU)
    assert other_rate.latents_computed > 0  # other source frames: other clips


def test_a_corrupt_clip_entry_is_recomputed(project):
    result = build_cache(project, device=CPU)
    victim = result.entries[-1].latent_path
    victim.write_bytes(victim.read_bytes()[:100])
    again = build_cache(project, device=CPU)
    assert (again.latents_computed, again.latents_reused) == (1, 3)
    load_cached_tensors(again.entries)
