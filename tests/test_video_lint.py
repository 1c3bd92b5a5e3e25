"""`wanlora check` on video datasets: each rule on real video files written with PyAV."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from cli_run import run_cli
from video_files import (
    write_audio_only,
    write_frame_folder,
    write_h264,
    write_raw_h264,
    write_video,
)
from wanlora.dataset.lint import CheckReport, check_dataset
from wanlora.dataset.lint.videos import VideoReport, check_task_needs_videos, largest_bucket
from wanlora.dataset.tokens import TokenCounter
from wanlora.project_init import init_project
from wanlora.recipes import load_project

TRIGGER = "rm style"
KEYS = "resolution = [64, 64]\ntarget_frames = [1, 5]\nsource_fps = 30.0\n"


def make_project(tmp_path: Path, keys: str = KEYS, videos: int = 2):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me", trigger=TRIGGER)
    text = project.config_file.read_text()
    project.config_file.write_text(text.replace("[project]", f"[dataset]\n{keys}\n[project]"))
    for index in range(videos):
        write_h264(project.dataset_dir / f"clip_{index}.mp4", 12, fps=30, size=(80, 48))
        (project.dataset_dir / f"clip_{index}.txt").write_text(f"{TRIGGER}, video {index}")
    return load_project(project.root)


def check(project) -> CheckReport:
    return check_dataset(project, token_counter=TokenCounter())


def errors_for(report: CheckReport, name: str) -> list[str]:
    return [f.message for f in report.errors if Path(f.path).name == name]


def warnings_for(report: CheckReport, name: str) -> list[str]:
    return [f.message for f in report.warnings if Path(f.path).name == name]


def test_clean_video_dataset_reports_clips_per_video(tmp_path):
    report = check(make_project(tmp_path))
    assert report.errors == [] and report.warnings == [], (report.errors, report.warnings)
    first, second = report.videos
    assert (first.frame_count, first.fps, first.bucket) == (12, 30.0, [80, 48])
    assert (first.clips, first.clip_frames, first.caption_tokens is not None) == (2, [1, 5], True)
    assert report.images == []  # videos only: no "no images" error, no 18-image warning
    # 80x48, 5 frames: (1 + 4 // 4) latent frames x (48/16) x (80/16) = 2 x 3 x 5
    assert (report.largest_bucket, report.largest_bucket_tokens) == ([80, 48, 5], 30)
    assert '"clip_frames": [' in report.to_json()


def test_unreadable_corrupt_and_audio_only_files(tmp_path):
    project = make_project(tmp_path)
    folder = project.dataset_dir
    (folder / "junk.mp4").write_bytes(b"\x00" * 500)
    good = (folder / "clip_0.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(good[: len(good) // 2])
    write_audio_only(folder / "voice.mp4")
    for name in ("junk", "cut", "voice"):
        (folder / f"{name}.txt").write_text(f"{TRIGGER}, {name}")
    report = check(project)
    for name in ("junk.mp4", "cut.mp4"):
        (message,) = errors_for(report, name)
        assert "not a readable video" in message and "ffmpeg" in message
    (message,) = errors_for(report, "voice.mp4")
    assert "has no video stream" in message and "remove it" in message
    assert {Path(f.path).name for f in report.errors} == {"junk.mp4", "cut.mp4", "voice.mp4"}


def test_a_video_shorter_than_every_target(tmp_path):
    project = make_project(tmp_path, KEYS.replace("[1, 5]", "[9, 81]"), videos=1)
    write_h264(project.dataset_dir / "long.mp4", 40, fps=30, size=(80, 48))
    (project.dataset_dir / "long.txt").write_text(f"{TRIGGER}, long")
    report = check(project)
    (message,) = errors_for(report, "clip_0.mp4")
    assert message == (
        "gives no clip: its 6 frames at 16 fps are fewer than every target_frames [9, 81] "
        "-- lower target_frames or remove the video"
    )
    (warning,) = warnings_for(report, "long.mp4")
    assert warning == "no 81-frame clip: the video has only 21 frames at 16 fps"


def test_no_clips_at_all(tmp_path):
    project = make_project(tmp_path, KEYS.replace("[1, 5]", "[81]"))
    report = check(project)
    assert any("the video datasets give no clips" in f.message for f in report.errors)
    assert "wanlora inspect clips" in report.errors[-1].message


def test_unknown_or_variable_rate_needs_source_fps(tmp_path):
    project = make_project(tmp_path, KEYS.replace("source_fps = 30.0\n", ""), videos=0)
    folder = project.dataset_dir
    write_raw_h264(folder / "raw.mp4", 10, size=(80, 48))
    stamps = [0, 33, 66, 100, 200, 300, 333, 366, 400, 500]
    write_video(folder / "vfr.mp4", 10, size=(80, 48), timestamps_ms=stamps)
    for name in ("raw", "vfr"):
        (folder / f"{name}.txt").write_text(f"{TRIGGER}, {name}")
    report = check(project)
    (raw,) = errors_for(report, "raw.mp4")
    assert "frame rate is unknown and source_fps is unset" in raw and "ffmpeg" in raw
    (vfr,) = errors_for(report, "vfr.mp4")
    assert "frame rate is variable" in vfr and "set source_fps" in vfr
    # with source_fps set, a variable rate is only a warning
    text = project.config_file.read_text().replace("[dataset]\n", "[dataset]\nsource_fps = 30.0\n")
    project.config_file.write_text(text)
    report = check(load_project(project.root))
    assert errors_for(report, "vfr.mp4") == [] and errors_for(report, "raw.mp4") == []
    assert "variable frame rate" in warnings_for(report, "vfr.mp4")[0]


def test_a_folder_of_frames_needs_no_rate(tmp_path):
    project = make_project(tmp_path, KEYS.replace("source_fps = 30.0\n", ""), videos=0)
    write_frame_folder(project.root / "shots" / "turn", 5, size=(80, 48))
    (project.root / "shots.jsonl").write_text(
        json.dumps({"video_path": "shots/turn", "caption": f"{TRIGGER}, a turn"}) + "\n"
    )
    (project.root / "dataset.toml").write_text('[[datasets]]\nvideo_jsonl_file = "shots.jsonl"\n')
    text = project.config_file.read_text()
    project.config_file.write_text(
        text.replace("[dataset]\n", '[dataset]\ndataset_toml = "dataset.toml"\n')
    )
    report = check(load_project(project.root))
    assert report.errors == [] and report.warnings == []
    (row,) = report.videos
    assert (row.fps, row.frame_count, row.clips, row.caption_tokens > 0) == (None, 5, 2, True)


def test_frame_rate_mismatches_are_warned(tmp_path):
    project = make_project(tmp_path, KEYS.replace("source_fps = 30.0\n", ""), videos=1)
    (warning,) = warnings_for(check(project), "clip_0.mp4")
    assert warning == (
        "30 fps video trained frame by frame (source_fps unset): its motion plays 1.9x slower "
        "at the model's 16 fps -- set source_fps = 30.0 to drop frames to 16 fps"
    )
    project = make_project(tmp_path / "b", videos=0)
    write_h264(project.dataset_dir / "cine.mp4", 30, fps=24, size=(80, 48))
    (project.dataset_dir / "cine.txt").write_text(f"{TRIGGER}, cinema")
    (warning,) = warnings_for(check(project), "cine.mp4")
    assert warning.startswith(
        "the video is 24 fps but source_fps = 30: its motion trains 1.2x faster"
    )


def test_resolution_below_the_bucket(tmp_path):
    project = make_project(tmp_path, videos=0)
    folder = project.dataset_dir
    write_h264(folder / "tiny.mp4", 9, fps=30, size=(20, 12))  # bucket 80x48: 4x
    write_h264(folder / "soft.mp4", 9, fps=30, size=(50, 30))  # 1.6x
    write_h264(folder / "crop.mp4", 9, fps=30, size=(64, 48))  # bucket 64x64, width matches
    for name in ("tiny", "soft", "crop"):
        (folder / f"{name}.txt").write_text(f"{TRIGGER}, {name}")
    report = check(project)
    (tiny,) = errors_for(report, "tiny.mp4")
    assert "upscaled 4.0x into their 80x48 bucket (limit 2x)" in tiny
    (soft,) = warnings_for(report, "soft.mp4")
    assert "upscaled 1.6x" in soft
    (crop,) = errors_for(report, "crop.mp4")
    assert "do not fill their 64x64 bucket" in crop


def test_captions(tmp_path):
    project = make_project(tmp_path, videos=3)
    folder = project.dataset_dir
    (folder / "clip_0.txt").unlink()
    (folder / "clip_1.txt").write_text("  \n")
    (folder / "clip_2.txt").write_text("no trigger here")
    report = check(project)
    assert errors_for(report, "clip_0.mp4") == [
        "no caption file clip_0.txt -- write one next to the video"
    ]
    assert errors_for(report, "clip_1.txt") == ["caption is empty -- describe the video in it"]
    (trigger,) = warnings_for(report, "clip_2.txt")
    assert f'trigger phrase "{TRIGGER}" is missing' in trigger


def test_images_and_videos_in_one_folder(tmp_path):
    project = make_project(tmp_path, videos=1)
    Image.new("RGB", (64, 64), "red").save(project.dataset_dir / "still.png")
    (project.dataset_dir / "still.txt").write_text(f"{TRIGGER}, a still")
    report = check(project)
    assert report.errors == []  # clip_0.txt is the video's caption, not an orphan
    assert len(report.images) == 1 and len(report.videos) == 1
    assert report.largest_bucket == [80, 48, 5]


def test_settings_musubi_ignores_for_videos_and_mixed_case_names(tmp_path):
    project = make_project(tmp_path, KEYS + "enable_bucket = false\n", videos=1)
    (project.dataset_dir / "other.Mp4").write_bytes(b"")
    report = check(project)
    assert any("do not apply to videos" in f.message for f in report.warnings)
    (mixed,) = warnings_for(report, "other.Mp4")
    assert "does not read .Mp4 files" in mixed and "rename it" in mixed


def test_i2v_needs_video_clips():
    where = Path("/p/dataset")
    report = CheckReport()
    check_task_needs_videos("i2v-A14B", [], where, report)
    check_task_needs_videos("i2v-A14B", [VideoReport("a.mp4", clip_frames=[1])], where, report)
    assert len(report.errors) == 2
    assert "i2v-A14B task trains motion after the first frame" in report.errors[0].message
    assert "set target_frames" in report.errors[0].message
    fine = CheckReport()
    check_task_needs_videos("i2v-A14B", [VideoReport("a.mp4", clip_frames=[1, 81])], where, fine)
    check_task_needs_videos("t2v-A14B", [], where, fine)
    assert fine.errors == []


def test_largest_bucket_tokens():
    videos = [VideoReport("a.mp4", bucket=[832, 480], clip_frames=[1, 81])]
    # 81 frames: 21 latent frames x (480/16) x (832/16) = 21 x 30 x 52
    assert largest_bucket([[960, 960]], videos, "t2v-A14B") == ([832, 480, 81], 32760)
    assert largest_bucket([[960, 960]], [], "t2v-A14B") == ([960, 960, 1], 3600)
    # the 5B model's VAE is 16x: tokens per side halve
    assert largest_bucket([], [VideoReport("b.mp4", bucket=[1280, 704], clip_frames=[121])],
                          "ti2v-5B") == ([1280, 704, 121], 31 * 22 * 40)  # fmt: skip
    assert largest_bucket([], [], "t2v-A14B") == (None, None)


def test_cli_check_shows_videos_and_the_largest_bucket(tmp_path):
    project = make_project(tmp_path)
    result = run_cli("check", str(project.root), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Videos" in result.stdout and "clip_0.mp4" in result.stdout
    assert "2 (1, 5 frames)" in result.stdout
    assert "largest bucket: 80x48, 5 frames -> 30 DiT tokens" in result.stdout
    assert "0 images, 2 videos (4 clips), 0 errors" in result.stdout
