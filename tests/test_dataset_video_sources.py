"""Video datasets in dataset.toml and wanlora.toml: keys, defaults, layering, JSONL lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from video_files import write_frame_folder, write_h264
from wanlora.dataset.clips import FrameSettings
from wanlora.dataset.musubi_toml import read_dataset_toml
from wanlora.dataset.sources import dataset_sources
from wanlora.dataset.video_sources import list_video_sources, read_video_jsonl
from wanlora.errors import WanloraError
from wanlora.project_init import init_project
from wanlora.recipes import load_project


def project_with(tmp_path: Path, dataset_toml: str | None = None, dataset_keys: str = ""):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    lines = dataset_keys
    if dataset_toml is not None:
        (project.root / "dataset.toml").write_text(dataset_toml)
        lines = 'dataset_toml = "dataset.toml"\n' + lines
    if lines:
        text = project.config_file.read_text()
        project.config_file.write_text(text.replace("[project]", f"[dataset]\n{lines}\n[project]"))
    return load_project(project.root)


MIXED = """
[general]
resolution = [512, 512]
caption_extension = ".caption"
target_frames = [9]

[[datasets]]
image_directory = "images"
frame_stride = 2

[[datasets]]
video_directory = "videos"
cache_directory = "videos/cache"
target_frames = [1, 25, 45]
frame_extraction = "chunk"
source_fps = 30.0
control_directory = "ctrl"

[[datasets]]
video_jsonl_file = "list.jsonl"
num_repeats = 2
resolution = [256, 256]
"""


def test_image_and_video_datasets_mixed(tmp_path):
    path = tmp_path / "dataset.toml"
    path.write_text(MIXED)
    parsed = read_dataset_toml(path, video_defaults=FrameSettings(max_frames=33))
    (images,) = parsed.datasets
    folder, listed = parsed.videos
    assert images.image_directory == tmp_path / "images"
    assert folder.video_directory == tmp_path / "videos" and folder.video_jsonl_file is None
    assert folder.location == tmp_path / "videos"
    assert folder.cache_directory == tmp_path / "videos" / "cache"
    assert (folder.resolution, folder.caption_extension) == ((512, 512), ".caption")
    assert folder.frames == FrameSettings((1, 25, 45), "chunk", 1, 1, 33, 30.0)
    assert listed.video_jsonl_file == tmp_path / "list.jsonl" and listed.video_directory is None
    assert (listed.resolution, listed.num_repeats) == ((256, 256), 2)
    assert listed.frames == FrameSettings(max_frames=33)  # the defaults given
    assert folder.source == f"{path} datasets[1]"
    reason = "a video key: musubi-tuner reads it only in a video [[datasets]] entry"
    assert parsed.ignored_keys == [
        f"general.target_frames ({reason})",
        f"datasets[0].frame_stride ({reason})",
        "datasets[1].cache_directory (wanlora caches under the project's cache/ folder)",
        "datasets[1].control_directory (control videos are not supported)",
    ]


def test_the_projects_dataset_keys_are_the_defaults_of_video_entries(tmp_path):
    project = project_with(
        tmp_path,
        '[[datasets]]\nvideo_directory = "clips"\nframe_sample = 4\n',
        'target_frames = [1, 81]\nframe_extraction = "uniform"\nsource_fps = 24\n',
    )
    sources = dataset_sources(project)
    assert sources.entries == []
    (entry,) = sources.videos
    assert entry.video_directory == project.root / "clips"
    assert entry.frames == FrameSettings((1, 81), "uniform", 1, 4, 129, 24.0)


def test_videos_in_the_project_folder_are_a_video_dataset(tmp_path):
    project = project_with(tmp_path, dataset_keys="target_frames = [5]\n")
    assert dataset_sources(project).videos == []  # no videos: as before
    write_h264(project.dataset_dir / "walk.mp4", 8)
    sources = dataset_sources(project)
    assert sources.entries == []  # videos only
    (entry,) = sources.videos
    assert entry.video_directory == project.dataset_dir and entry.frames.target_frames == (5,)
    (project.dataset_dir / "still.png").write_bytes(b"")
    (images,) = dataset_sources(project).entries
    assert images.image_directory == project.dataset_dir


def test_dataset_keys_in_wanlora_toml_are_checked(tmp_path):
    with pytest.raises(WanloraError, match="frame_extraction") as info:
        project_with(tmp_path, dataset_keys='frame_extraction = "tail"\n')
    assert "wanlora.toml" in str(info.value)
    with pytest.raises(WanloraError, match="target_frames"):
        project_with(tmp_path / "2", dataset_keys="target_frames = []\n")
    with pytest.raises(WanloraError, match="source_fps"):
        project_with(tmp_path / "3", dataset_keys="source_fps = 0\n")
    with pytest.raises(WanloraError, match="frame_stride"):
        project_with(tmp_path / "4", dataset_keys="frame_stride = 0\n")


@pytest.mark.parametrize(
    ("keys", "message", "fix"),
    [
        ("target_frames = 25", "not a list of frame counts", "target_frames = [1, 25, 45]"),
        ('target_frames = ["25"]', "not a list of frame counts", "target_frames = [1, 25, 45]"),
        ("target_frames = [0, 5]", "must all be at least 1", "fix that key"),
        ('frame_extraction = "tail"', "not one of head, chunk, slide, uniform, full", "fix"),
        ("frame_extraction = 1", "not a mode name", 'frame_extraction = "head"'),
        ("source_fps = 30", "not a decimal number", "write source_fps = 30.0"),
        ("frame_stride = 0", "frame_stride = 0 must be at least 1", "fix that key"),
        ("frame_sample = 1.5", "not a whole number", "frame_sample = 1"),
        ("video_directory = 3", "is not a path", 'video_directory = "..."'),
        ('video_jsonl_file = ""', "is not a path", 'video_jsonl_file = "..."'),
    ],
)
def test_bad_video_keys_are_one_clear_error(tmp_path, keys, message, fix):
    path = tmp_path / "dataset.toml"
    location = "" if keys.startswith("video_") else 'video_directory = "v"\n'
    path.write_text(f"[[datasets]]\n{location}{keys}\n")
    with pytest.raises(WanloraError, match=message) as info:
        read_dataset_toml(path)
    text = str(info.value)
    assert str(path) in text and "datasets[0]" in text and fix in text and "\n" not in text


def test_directory_and_jsonl_together_uses_the_directory(tmp_path):
    path = tmp_path / "dataset.toml"
    path.write_text('[[datasets]]\nvideo_directory = "v"\nvideo_jsonl_file = "l.jsonl"\n')
    parsed = read_dataset_toml(path)
    assert parsed.videos[0].video_directory == tmp_path / "v"
    assert parsed.videos[0].video_jsonl_file is None
    assert parsed.ignored_keys == [
        "datasets[0].video_jsonl_file (musubi-tuner uses video_directory when both are set)"
    ]


def test_video_folder_listing_pairs_captions(tmp_path):
    path = tmp_path / "dataset.toml"
    path.write_text('[[datasets]]\nvideo_directory = "v"\ncaption_extension = ".cap"\n')
    (entry,) = read_dataset_toml(path).videos
    with pytest.raises(WanloraError, match="video folder does not exist"):
        list_video_sources(entry)
    write_h264(tmp_path / "v" / "b.mp4", 4)
    write_h264(tmp_path / "v" / "a.MP4", 4)
    (tmp_path / "v" / "a.cap").write_text("  a caption \n")
    a, b = list_video_sources(entry)
    assert (a.path.name, b.path.name) == ("a.MP4", "b.mp4")
    assert a.caption_path == tmp_path / "v" / "a.cap" and a.read_caption() == "a caption"
    with pytest.raises(WanloraError, match="caption file missing"):
        b.read_caption()


def test_jsonl_lists_videos_and_frame_folders(tmp_path):
    write_frame_folder(tmp_path / "frames" / "shot1", 3)
    lines = [
        {"video_path": "clips/walk.mp4", "caption": "walking "},
        {"video_path": str(tmp_path / "frames" / "shot1"), "caption": "a shot"},
    ]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    walk, shot = read_video_jsonl(jsonl)
    assert walk.path == tmp_path / "clips" / "walk.mp4"  # relative to the JSONL's folder
    assert walk.read_caption() == "walking "  # as written: musubi does not strip JSONL captions
    assert shot.path == tmp_path / "frames" / "shot1" and shot.caption_path is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"video_path": "a.mp4", "caption": "a"}\n\n', "line 2 is empty"),
        ("not json\n", "line 1 is not JSON"),
        ('{"caption": "a"}\n', 'line 1 has no "video_path" string'),
        ('["a.mp4"]\n', 'line 1 has no "video_path" string'),
        ('{"video_path": "a.mp4"}\n', 'line 1 has no "caption" string'),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path, text, message):
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(text)
    with pytest.raises(WanloraError, match=message) as info:
        read_video_jsonl(jsonl)
    assert str(jsonl) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(WanloraError, match="video list not found"):
        read_video_jsonl(tmp_path / "none.jsonl")
