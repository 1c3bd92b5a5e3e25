"""`wanlora inspect clips`: every clip of a project with real videos, as a table and as JSON."""

from __future__ import annotations

import json

from cli_run import run_cli
from video_files import write_frame_folder, write_h264
from wanlora.dataset.clip_list import project_clip_list
from wanlora.project_init import init_project
from wanlora.recipes import load_project

KEYS = """\
resolution = [64, 64]
target_frames = [1, 5]
frame_extraction = "slide"
frame_stride = 3
source_fps = 30.0
"""


def make_project(tmp_path, keys: str = KEYS):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    text = project.config_file.read_text()
    project.config_file.write_text(text.replace("[project]", f"[dataset]\n{keys}\n[project]"))
    write_h264(project.dataset_dir / "walk.mp4", 24, fps=30, size=(80, 48))
    (project.dataset_dir / "walk.txt").write_text("a walk")
    return load_project(project.root)


def test_clip_list_of_a_project(tmp_path):
    project = make_project(tmp_path)
    (project.dataset_dir / "broken.mp4").write_bytes(b"not a video")
    listing = project_clip_list(project)
    broken, walk = listing.videos
    assert "not a readable video" in broken.error and broken.clips == []
    assert (walk.frame_count, walk.fps, walk.used_frames) == (24, 30.0, 13)
    assert (walk.size, walk.bucket, walk.frame_extraction) == ([80, 48], [80, 48], "slide")
    # 13 frames at 16 fps: 0 2 4 6 8 10 12 14 16 17 19 21 23; slide by 3
    assert [(c.name, c.start, c.frames, c.source_frames) for c in walk.clips] == [
        ("walk_00000-001", 0, 1, [0, 0]),
        ("walk_00003-001", 3, 1, [6, 6]),
        ("walk_00006-001", 6, 1, [12, 12]),
        ("walk_00009-001", 9, 1, [17, 17]),
        ("walk_00012-001", 12, 1, [23, 23]),
        ("walk_00000-005", 0, 5, [0, 8]),
        ("walk_00003-005", 3, 5, [6, 14]),
        ("walk_00006-005", 6, 5, [12, 19]),
    ]
    assert all(c.source == walk.source and c.bucket == [80, 48] for c in walk.clips)
    assert listing.clip_count == 8 and listing.target_fps == 16.0


def test_inspect_clips_json_and_table(tmp_path):
    project = make_project(tmp_path, KEYS.replace("source_fps = 30.0\n", ""))
    jsonl = project.root / "shots.jsonl"
    write_frame_folder(project.root / "shots" / "turn", 6, size=(64, 64))
    jsonl.write_text(json.dumps({"video_path": "shots/turn", "caption": "a turn"}) + "\n")
    (project.root / "dataset.toml").write_text(
        "[general]\nresolution = [64, 64]\n"
        '[[datasets]]\nvideo_directory = "dataset"\nframe_extraction = "chunk"\n'
        "target_frames = [5]\nsource_fps = 30.0\n"
        '[[datasets]]\nvideo_jsonl_file = "shots.jsonl"\nframe_extraction = "full"\n'
    )
    text = project.config_file.read_text()
    project.config_file.write_text(
        text.replace("[dataset]\n", '[dataset]\ndataset_toml = "dataset.toml"\n')
    )

    result = run_cli("inspect", "clips", str(project.root), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    walk, turn = data["videos"]
    assert [c["name"] for c in walk["clips"]] == ["walk_00000-005", "walk_00005-005"]
    assert walk["clips"][1] == {
        "name": "walk_00005-005",
        "source": str(project.dataset_dir / "walk.mp4"),
        "start": 5,
        "frames": 5,
        "bucket": [80, 48],
        "source_frames": [10, 17],
    }
    # a folder of frames, full: 6 frames -> one clip of 5, no frame rate, all frames used
    assert (turn["fps"], turn["used_frames"], turn["source_fps"]) == (None, 6, None)
    assert [(c["name"], c["frames"]) for c in turn["clips"]] == [("turn_00000-005", 5)]
    assert data["clip_count"] == 3

    table = run_cli("inspect", "clips", str(project.root))
    assert table.returncode == 0, table.stderr
    assert "walk.mp4: 24 frames, 30 fps; 13 at 16 fps (source_fps 30)" in table.stdout
    assert "walk_00005-005" in table.stdout and "10-17" in table.stdout
    assert "6 used as they are (source_fps unset)" in table.stdout
    assert "3 clips from 2 videos" in table.stdout


def test_inspect_clips_fails_on_an_unreadable_video(tmp_path):
    project = make_project(tmp_path)
    (project.dataset_dir / "cut.mp4").write_bytes(b"\x00" * 64)
    result = run_cli("inspect", "clips", str(project.root))
    assert result.returncode == 1
    assert "cut.mp4: not a readable video" in result.stdout
