"""Video clips as training items: names, frames, buckets, batching, and their pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from video_files import frame_index_of, write_frame_folder, write_h264, write_lossless
from wanlora.dataset.clips import FrameSettings
from wanlora.dataset.images import resize_to_bucket
from wanlora.dataset.items import load_items, load_video_entry_items
from wanlora.dataset.order import bucket_groups, epoch_batches, steps_per_epoch
from wanlora.dataset.video import decode_frames
from wanlora.dataset.video_frames import load_clip_frames, load_video_clips
from wanlora.dataset.video_sources import VideoEntry
from wanlora.errors import WanloraError
from wanlora.project_init import init_project
from wanlora.recipes import load_project

KEYS = """\
resolution = [64, 64]
target_frames = [1, 5]
frame_extraction = "chunk"
source_fps = 30.0
"""


def make_project(tmp_path, keys: str = KEYS, images: int = 1):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    text = project.config_file.read_text()
    project.config_file.write_text(text.replace("[project]", f"[dataset]\n{keys}\n[project]"))
    folder = project.dataset_dir
    for index in range(images):
        Image.new("RGB", (64, 64), "red").save(folder / f"img_{index}.png")
        (folder / f"img_{index}.txt").write_text(f"image {index}")
    write_h264(folder / "walk.mp4", 24, fps=30, size=(80, 48))  # 24 frames -> 13 at 16 fps
    (folder / "walk.txt").write_text("  a walk \n")
    write_h264(folder / "wave.mp4", 9, fps=30, size=(48, 80))  # 9 frames -> 5 at 16 fps
    (folder / "wave.txt").write_text("a wave")
    return load_project(project.root)


def test_every_clip_is_an_item_after_the_images(tmp_path):
    project = make_project(tmp_path)
    items = load_items(project)
    assert [i.name for i in items] == [
        "img_0",
        # walk: 13 converted frames; chunk 1: 13 clips, chunk 5: starts 0, 5
        *[f"walk_{s:05d}-001" for s in range(13)],
        "walk_00000-005",
        "walk_00005-005",
        *[f"wave_{s:05d}-001" for s in range(5)],
        "wave_00000-005",
    ]
    walk = [i for i in items if i.image_path.name == "walk.mp4"]
    assert {i.caption for i in walk} == {"a walk"}
    assert {i.bucket for i in walk} == {(80, 48)} and walk[0].original_size == (80, 48)
    five = walk[-1]
    assert (five.frames, five.batch_key, five.clip.start) == (5, (80, 48, 5), 5)
    # converted frames of walk at 16 fps: 0 2 4 6 8 10 12 14 16 17 19 21 23
    assert five.clip.frame_indices == (10, 12, 14, 16, 17)
    wave = items[-1]
    assert wave.bucket == (48, 80) and wave.clip.frame_indices == (0, 2, 4, 6, 8)
    assert items[0].frames == 1 and items[0].clip is None and items[0].batch_key == (64, 64, 1)


def test_batches_group_width_height_and_frames(tmp_path):
    items = load_items(make_project(tmp_path))
    groups = bucket_groups(items)
    assert sorted(groups) == [(48, 80, 1), (48, 80, 5), (64, 64, 1), (80, 48, 1), (80, 48, 5)]
    assert [items[i].name for i in groups[(80, 48, 5)]] == ["walk_00000-005", "walk_00005-005"]
    assert steps_per_epoch(items, 4) == 2 + 1 + 1 + 4 + 1
    for batch in epoch_batches(items, 4, epoch=1, seed=5):
        assert len({items[i].batch_key for i in batch}) == 1


def test_images_alone_are_unchanged(tmp_path):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    Image.new("RGB", (64, 48)).save(project.dataset_dir / "a.png")
    (project.dataset_dir / "a.txt").write_text("a")
    (item,) = load_items(project)
    assert (item.name, item.frames, item.clip, item.batch_key) == ("a", 1, None, (1104, 832, 1))


def test_video_frames_are_bucketed_like_images(tmp_path):
    source = write_lossless(tmp_path / "shot.mkv", 12, fps=16, size=(100, 60))
    (tmp_path / "shot.txt").write_text("a shot")
    entry = VideoEntry(tmp_path, resolution=(64, 64), frames=FrameSettings((5,), "chunk"))
    first, second = load_video_entry_items(entry)
    assert first.bucket == (80, 48) and second.clip.frame_indices == (5, 6, 7, 8, 9)
    frames = load_clip_frames(second.clip, second.bucket)
    assert frames.shape == (5, 48, 80, 3) and frames.dtype == np.uint8
    decoded = dict(decode_frames(source, range(12)))
    for offset, index in enumerate(second.clip.frame_indices):
        assert np.array_equal(frames[offset], resize_to_bucket(decoded[index], (80, 48)))
        assert frame_index_of(frames[offset]) == index
    both = list(load_video_clips(source, [first.clip, second.clip], first.bucket))
    assert [clip for clip, _ in both] == [first.clip, second.clip]
    assert np.array_equal(both[1][1], frames)


def test_enable_bucket_off_still_buckets_videos_as_musubi(tmp_path):
    write_lossless(tmp_path / "wide.mkv", 5, size=(100, 60))
    (tmp_path / "wide.txt").write_text("wide")
    entry = VideoEntry(tmp_path, resolution=(64, 64), enable_bucket=False, bucket_no_upscale=True)
    (item,) = load_video_entry_items(entry)
    assert item.bucket == (80, 48)  # not (64, 64), not 96x48 (no-upscale)


def test_the_5b_target_rate(tmp_path):
    write_h264(tmp_path / "a.mp4", 30, fps=30)
    (tmp_path / "a.txt").write_text("a")
    entry = VideoEntry(tmp_path, frames=FrameSettings((1,), "full", source_fps=30.0))
    (at16,) = load_video_entry_items(entry)
    (at24,) = load_video_entry_items(entry, target_fps=24.0)
    assert (at16.frames, at24.frames) == (13, 21)  # 16 -> 13, 24 -> 21 frames (4n+1)


def test_a_frame_folder_listed_in_jsonl(tmp_path):
    write_frame_folder(tmp_path / "frames" / "shot", 10, size=(64, 64))
    jsonl = tmp_path / "videos.jsonl"
    jsonl.write_text(json.dumps({"video_path": "frames/shot", "caption": "a shot"}) + "\n")
    entry = VideoEntry(video_jsonl_file=jsonl, resolution=(64, 64), frames=FrameSettings((9,)))
    (item,) = load_video_entry_items(entry)
    assert (item.name, item.caption, item.bucket) == ("shot_00000-009", "a shot", (64, 64))
    frames = load_clip_frames(item.clip, item.bucket)
    assert [frame_index_of(f) for f in frames] == list(range(9))


def test_problems_stop_with_one_clear_error(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    entry = VideoEntry(folder, frames=FrameSettings((81,)))
    with pytest.raises(WanloraError, match="no videos"):
        load_video_entry_items(entry)
    write_h264(folder / "short.mp4", 20)
    with pytest.raises(WanloraError, match="caption file missing"):
        load_video_entry_items(entry)
    (folder / "short.txt").write_text("short")
    with pytest.raises(WanloraError, match=r"no clips.*target_frames \[81\]") as info:
        load_video_entry_items(entry)
    assert "wanlora inspect clips" in str(info.value)
    (folder / "short.mp4").write_bytes(b"broken")
    with pytest.raises(WanloraError, match="not a readable video"):
        load_video_entry_items(entry)
