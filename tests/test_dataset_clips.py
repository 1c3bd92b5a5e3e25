"""Clip lists (dataset/clips.py) against lists worked out by hand from musubi-tuner's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanlora.dataset.clips import (
    Clip,
    FrameSettings,
    clip_name,
    clip_spans,
    converted_frames,
    round_target_frames,
    target_fps_for_task,
    video_clips,
)


def spans(frames, **settings):
    return clip_spans(frames, FrameSettings(**settings))


def test_target_frames_round_down_to_4n_plus_1_dedup_sorted():
    assert round_target_frames([81, 1, 25, 45]) == (1, 25, 45, 81)
    # 3 -> 1, 80 -> 77, 26 -> 25 (a duplicate), 4 -> 1
    assert round_target_frames([80, 3, 26, 25, 4, 1]) == (1, 25, 77)
    assert FrameSettings(target_frames=(2, 9, 10)).targets == (1, 9)


def test_no_source_fps_keeps_every_frame():
    assert converted_frames(6, None) == [0, 1, 2, 3, 4, 5]
    assert converted_frames(6, None, limit=4) == [0, 1, 2, 3]


def test_source_fps_30_drops_to_16_with_musubis_running_sum():
    # sum += 16/30 after each frame; keep when int(sum) changes. At frame 15 the sum is
    # 7.99999..., not 8.0, so frame 15 is dropped and 16 kept (i*16/30 would keep 15).
    assert converted_frames(20, 30.0) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 17, 19]
    assert len(converted_frames(60, 30.0)) == 32  # 2 seconds at 16 fps


def test_source_fps_24_and_25():
    # 24 fps: sums 0, .67, 1.33, 2.0, 2.67, 3.33, 3.99999.. (frame 6 dropped), 4.67, 5.33, 6.0 ..
    assert converted_frames(13, 24.0) == [0, 2, 3, 5, 7, 8, 9, 11, 12]
    assert converted_frames(20, 25.0) == [0, 2, 4, 5, 7, 8, 10, 11, 13, 15, 16, 18, 19]
    assert len(converted_frames(48, 24.0)) == 32


def test_source_at_target_rate_keeps_all_and_slower_source_is_not_padded():
    assert converted_frames(10, 16.0) == list(range(10))
    assert converted_frames(10, 8.0) == list(range(10))  # never duplicated


def test_head_limit_counts_target_frames_so_a_slow_source_reads_fewer():
    # 8 fps -> 16: target indices 0, 2, 4, 6, ...; reading stops at index >= 5.
    assert converted_frames(10, 8.0, limit=5) == [0, 1, 2]
    assert video_clips(Path("slow.mp4"), 10, FrameSettings((5,), source_fps=8.0)) == []
    assert converted_frames(40, 30.0, limit=9) == [0, 2, 4, 6, 8, 10, 12, 14, 16]


def test_the_5b_model_converts_to_24_fps():
    assert target_fps_for_task("ti2v-5B") == 24.0
    assert target_fps_for_task("t2v-A14B") == target_fps_for_task("i2v-A14B") == 16.0
    # sums 0, .8, 1.6, 2.4, 3.2, 4.0 -> ints 0 0 1 2 3 4: frame 1 dropped
    assert converted_frames(6, 30.0, target_fps=24.0) == [0, 2, 3, 4, 5]


def test_head():
    assert spans(20, target_frames=(1, 9, 25)) == [(0, 1), (0, 9)]
    assert FrameSettings(target_frames=(1, 9, 25)).read_limit == 25


def test_chunk():
    assert spans(20, target_frames=(5, 9), frame_extraction="chunk") == [
        (0, 5), (5, 5), (10, 5), (15, 5), (0, 9), (9, 9),
    ]  # fmt: skip
    assert spans(4, target_frames=(5,), frame_extraction="chunk") == []


def test_slide():
    assert spans(20, target_frames=(9,), frame_extraction="slide", frame_stride=4) == [
        (0, 9), (4, 9), (8, 9),
    ]  # fmt: skip
    assert spans(20, target_frames=(17,), frame_extraction="slide") == [
        (0, 17), (1, 17), (2, 17), (3, 17),
    ]  # fmt: skip


def test_uniform():
    # linspace(0, 20 - 5, 3) = 0, 7.5, 15 -> 0, 7, 15
    assert spans(20, target_frames=(5,), frame_extraction="uniform", frame_sample=3) == [
        (0, 5), (7, 5), (15, 5),
    ]  # fmt: skip
    assert spans(20, target_frames=(5, 9), frame_extraction="uniform", frame_sample=2) == [
        (0, 5), (15, 5), (0, 9), (11, 9),
    ]  # fmt: skip
    # linspace(0, 1, 4) = 0, .33, .67, 1 -> 0, 0, 0, 1: one clip per start, as trained
    assert spans(6, target_frames=(5,), frame_extraction="uniform", frame_sample=4) == [
        (0, 5), (1, 5),
    ]  # fmt: skip


def test_uniform_with_one_sample_is_head():
    settings = FrameSettings(target_frames=(5, 9), frame_extraction="uniform", frame_sample=1)
    assert settings.extraction == "head" and settings.read_limit == 9
    assert clip_spans(20, settings) == [(0, 5), (0, 9)]


def test_full():
    assert spans(20, frame_extraction="full") == [(0, 17)]  # 20 -> 17 = 4*4+1
    assert spans(200, frame_extraction="full") == [(0, 129)]  # max_frames 129 by default
    assert spans(200, frame_extraction="full", max_frames=50) == [(0, 49)]
    assert spans(3, frame_extraction="full", target_frames=(81,)) == [(0, 1)]
    assert FrameSettings(frame_extraction="full").read_limit is None


def test_clip_names_and_source_frames():
    assert clip_name("walk", 12, 9) == "walk_00012-009"
    clips = video_clips(
        Path("/d/walk.mp4"), 40, FrameSettings((5,), "chunk", source_fps=30.0), target_fps=16.0
    )
    # 40 frames at 30 fps -> 22 kept: 0 2 4 6 8 10 12 14 16 17 19 21 23 25 27 29 31 32 34 36 38 ..
    assert [c.name for c in clips] == [
        "walk_00000-005", "walk_00005-005", "walk_00010-005", "walk_00015-005",
    ]  # fmt: skip
    assert clips[0] == Clip(Path("/d/walk.mp4"), 0, 5, (0, 2, 4, 6, 8))
    assert clips[1].frame_indices == (10, 12, 14, 16, 17)
    assert clips[2].frame_indices == (19, 21, 23, 25, 27)


@pytest.mark.parametrize(
    ("settings", "phrase"),
    [
        ({"target_frames": ()}, "target_frames is empty"),
        ({"target_frames": (0, 5)}, "at least 1"),
        ({"frame_extraction": "tail"}, "not one of head, chunk, slide, uniform, full"),
        ({"frame_stride": 0}, "frame_stride = 0"),
        ({"frame_sample": 0}, "frame_sample = 0"),
        ({"max_frames": 0}, "max_frames = 0"),
        ({"source_fps": 0.0}, "source_fps = 0.0 must be above 0"),
    ],
)
def test_bad_settings_are_named(settings, phrase):
    (problem,) = FrameSettings(**settings).validate()
    assert phrase in problem
    assert FrameSettings().validate() == []
