"""`wanlora export musubi` with video datasets: musubi's own keys, per [[datasets]] entry."""

from __future__ import annotations

import json

from PIL import Image

from video_files import write_frame_folder, write_h264
from wanlora.dataset.clips import FrameSettings
from wanlora.dataset.musubi_toml import read_dataset_toml
from wanlora.export.musubi import musubi_export, write_musubi_export
from wanlora.project_init import init_project
from wanlora.recipes import load_project
from wanlora.recipes.project import tomllib

KEYS = (
    'target_frames = [1, 25, 45]\nframe_extraction = "uniform"\nframe_sample = 3\nsource_fps = 30\n'
)


def make_project(tmp_path, keys: str = KEYS, images: bool = True):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    text = project.config_file.read_text()
    project.config_file.write_text(text.replace("[project]", f"[dataset]\n{keys}\n[project]"))
    if images:
        Image.new("RGB", (64, 64)).save(project.dataset_dir / "still.png")
        (project.dataset_dir / "still.txt").write_text("a still")
    write_h264(project.dataset_dir / "walk.mp4", 10)
    (project.dataset_dir / "walk.txt").write_text("a walk")
    return load_project(project.root)


def test_images_and_videos_of_the_project_folder(tmp_path):
    project = make_project(tmp_path)
    data = tomllib.loads(musubi_export(project).dataset_toml)
    cache = project.root / "export" / "musubi" / "cache"
    images, videos = data["datasets"]
    assert images == {
        "image_directory": str(project.dataset_dir),
        "cache_directory": str(cache / "0"),
        "num_repeats": 1,
    }
    assert videos == {
        "video_directory": str(project.dataset_dir),
        "cache_directory": str(cache / "1"),  # apart: musubi would mix the two caches
        "num_repeats": 1,
        "target_frames": [1, 25, 45],
        "frame_extraction": "uniform",
        "frame_sample": 3,
        "source_fps": 30.0,  # musubi's schema takes only a float
    }
    assert "target_frames" not in data["general"]  # musubi reads video keys only per entry


def test_the_written_file_reads_back_to_the_same_settings(tmp_path):
    project = make_project(tmp_path, images=False)
    folder = write_musubi_export(project)
    parsed = read_dataset_toml(folder / "dataset.toml")
    assert parsed.datasets == [] and parsed.ignored_keys == [
        "datasets[0].cache_directory (wanlora caches under the project's cache/ folder)"
    ]
    (entry,) = parsed.videos
    assert entry.frames == FrameSettings((1, 25, 45), "uniform", 1, 3, 129, 30.0)
    assert entry.video_directory == project.dataset_dir
    general = tomllib.loads((folder / "dataset.toml").read_text())["general"]
    assert general["resolution"] == [960, 960]  # from the video entry: there are no images


def test_default_frame_keys_are_left_to_musubi(tmp_path):
    project = make_project(tmp_path, keys="", images=False)
    (videos,) = tomllib.loads(musubi_export(project).dataset_toml)["datasets"]
    assert set(videos) == {"video_directory", "cache_directory", "num_repeats"}


def test_a_jsonl_list_is_copied_with_absolute_paths(tmp_path):
    project = make_project(tmp_path, keys="", images=False)
    write_frame_folder(project.root / "shots" / "turn", 5)
    lines = [
        {"video_path": "shots/turn", "caption": "a turn "},
        {"video_path": str(project.dataset_dir / "walk.mp4"), "caption": "a walk"},
    ]
    (project.root / "list.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (project.root / "dataset.toml").write_text(
        '[[datasets]]\nvideo_jsonl_file = "list.jsonl"\ntarget_frames = [5]\nsource_fps = 24.0\n'
    )
    text = project.config_file.read_text()
    project.config_file.write_text(
        text.replace("[dataset]\n", '[dataset]\ndataset_toml = "dataset.toml"\n')
    )
    project = load_project(project.root)
    export = musubi_export(project)
    folder = project.root / "export" / "musubi"
    (entry,) = tomllib.loads(export.dataset_toml)["datasets"]
    assert entry == {
        "video_jsonl_file": str(folder / "videos_0.jsonl"),
        "cache_directory": str(folder / "cache"),
        "num_repeats": 1,
        "target_frames": [5],
        "source_fps": 24.0,
    }
    write_musubi_export(project)
    copied = [json.loads(line) for line in (folder / "videos_0.jsonl").read_text().splitlines()]
    assert copied == [
        {"video_path": str(project.root / "shots" / "turn"), "caption": "a turn "},
        lines[1],
    ]


def test_project_dataset_toml_text_keeps_video_caches_apart(tmp_path):
    from wanlora.dataset.sources import project_dataset_toml_text

    project = make_project(tmp_path)
    images, videos = tomllib.loads(project_dataset_toml_text(project))["datasets"]
    assert images["cache_directory"] == str(project.cache_dir / "musubi")
    assert videos["cache_directory"] == str(project.cache_dir / "musubi" / "video_0")
    assert videos["target_frames"] == [1, 25, 45]
