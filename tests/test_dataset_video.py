"""Probing and decoding real video files and frame folders (dataset/video.py) with PyAV."""

from __future__ import annotations

import numpy as np
import pytest

from video_files import (
    frame_index_of,
    frame_pixels,
    write_audio_only,
    write_frame_folder,
    write_h264,
    write_lossless,
    write_raw_h264,
    write_video,
)
from wanlora.dataset.video import (
    decode_frames,
    find_videos,
    is_mixed_case_video_name,
    probe_video,
)
from wanlora.errors import WanloraError


def test_probe_h264_mp4(tmp_path):
    info = probe_video(write_h264(tmp_path / "walk.mp4", 40, fps=30, size=(64, 48)))
    assert (info.frame_count, info.width, info.height) == (40, 64, 48)
    assert info.fps == 30.0 and not info.variable_fps and not info.is_folder


def test_probe_counts_decoded_frames_when_the_container_does_not_say(tmp_path):
    import av

    path = write_lossless(tmp_path / "clip.mkv", 25, fps=24)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no frame count
    info = probe_video(path)
    assert info.frame_count == 25 and info.fps == 24.0


def test_probe_ntsc_rate(tmp_path):
    info = probe_video(write_h264(tmp_path / "ntsc.mp4", 12, fps=30000 / 1001))
    assert info.fps == pytest.approx(29.97, abs=0.01) and not info.variable_fps


def test_a_bare_stream_has_no_known_rate(tmp_path):
    info = probe_video(write_raw_h264(tmp_path / "raw.mp4", 10))
    assert info.fps is None and info.frame_count == 10  # FFmpeg would say 25 fps


def test_variable_frame_rate_is_detected(tmp_path):
    stamps = [0, 33, 66, 100, 200, 300, 333, 366, 400, 500, 533, 566]
    info = probe_video(write_video(tmp_path / "vfr.mp4", 12, timestamps_ms=stamps))
    assert info.variable_fps and info.frame_count == 12


def test_probe_errors_name_the_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    good = write_h264(tmp_path / "good.mp4", 30).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 3])
    for name in ("empty.mp4", "junk.mp4", "cut.mp4"):
        with pytest.raises(WanloraError, match="not a readable video") as info:
            probe_video(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "ffmpeg" in str(info.value)
    with pytest.raises(WanloraError, match="has no video stream"):
        probe_video(write_audio_only(tmp_path / "voice.mp4"))
    with pytest.raises(WanloraError, match="video not found"):
        probe_video(tmp_path / "gone.mp4")


def test_probe_notices_a_changed_file(tmp_path):
    path = write_h264(tmp_path / "a.mp4", 10)
    assert probe_video(path).frame_count == 10
    write_h264(path, 14)
    assert probe_video(path).frame_count == 14


def test_decode_selected_frames_exactly(tmp_path):
    path = write_lossless(tmp_path / "clip.mkv", 30)
    frames = list(decode_frames(path, [29, 0, 5, 5, 17]))
    assert [i for i, _ in frames] == [0, 5, 17, 29]
    for index, image in frames:
        assert image.mode == "RGB" and image.size == (64, 48)
        assert np.array_equal(np.asarray(image), frame_pixels(index, 64, 48))  # lossless


def test_decode_h264_frames_close_to_what_was_written(tmp_path):
    path = write_h264(tmp_path / "clip.mp4", 70)
    wanted = [3, 20, 33, 69]
    assert [frame_index_of(img) for _, img in decode_frames(path, wanted)] == wanted
    assert list(decode_frames(path, [])) == []
    with pytest.raises(WanloraError, match="has no frame 70"):
        list(decode_frames(path, [2, 70]))


def test_a_folder_of_images_is_a_video_sorted_like_musubi(tmp_path):
    # musubi sorts the paths as strings: frame_10 comes before frame_2
    folder = write_frame_folder(
        tmp_path / "shot", 3, size=(40, 30), names=["frame_2.png", "frame_10.png", "frame_1.jpg"]
    )
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")
    info = probe_video(folder)
    assert (info.frame_count, info.size, info.fps, info.is_folder) == (3, (40, 30), None, True)
    order = [frame_index_of(img) for _, img in decode_frames(folder, [0, 1, 2])]
    assert order == [2, 1, 0]  # frame_1.jpg, frame_10.png, frame_2.png
    with pytest.raises(WanloraError, match="holds no images"):
        probe_video(write_frame_folder(tmp_path / "none", 0))


def test_find_videos_like_the_reference(tmp_path):
    for name in ("b.mp4", "a.MOV", "c.Mp4", ".d.mp4", "e.gif", "f.webm"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.mp4").mkdir()
    assert [p.name for p in find_videos(tmp_path)] == ["a.MOV", "b.mp4", "f.webm"]
    assert is_mixed_case_video_name(tmp_path / "c.Mp4")
    assert not is_mixed_case_video_name(tmp_path / "b.mp4")
