"""Real video files for tests, written with PyAV: each frame says its own index.

Frame i's top half has the grey level 8 * (i % 32), its bottom half 8 * (i // 32), steps
wide enough to survive lossy coding. `write_lossless` stores them exactly (FFV1 in
Matroska), `write_h264` as a user's phone would (H.264 in MP4). `frame_index_of` reads the
index back from decoded pixels.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[: height // 2] = 8 * (index % 32)
    pixels[height // 2 :] = 8 * (index // 32)
    return pixels


def _frame(index: int, width: int, height: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(frame_pixels(index, width, height), format="rgb24")


def write_video(
    path: Path,
    frames: int,
    fps: float = 30,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    timestamps_ms: list[int] | None = None,
) -> Path:
    """A real video file of `frames` frames at `fps` (or at the given timestamps, in ms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        if timestamps_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for index in range(frames):
            frame = _frame(index, *size)
            if timestamps_ms is not None:
                frame.pts, frame.time_base = timestamps_ms[index], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_h264(path: Path, frames: int, fps: float = 30, size=(64, 48)) -> Path:
    return write_video(path, frames, fps, size)


def write_lossless(path: Path, frames: int, fps: float = 30, size=(64, 48)) -> Path:
    return write_video(path, frames, fps, size, codec="ffv1", pix_fmt="bgr0")


def write_raw_h264(path: Path, frames: int, size=(64, 48)) -> Path:
    """A bare H.264 stream (no container, so no frame timing), whatever `path` is named."""
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            for packet in stream.encode(_frame(index, *size)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    """A real media file with one audio stream and no video stream."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for _ in range(4):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, frames: int, size=(64, 48), names=None) -> Path:
    """A folder of PNG frames (a video as images); `names` overrides frame_{i:03d}.png."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(frames):
        name = names[index] if names else f"frame_{index:03d}.png"
        Image.fromarray(np.asarray(_frame(index, *size).to_image())).save(folder / name)
    return folder


def frame_index_of(pixels) -> int:
    """The index a decoded (possibly resized) frame was written with."""
    array = np.asarray(pixels, dtype=np.float64)
    half = array.shape[0] // 2
    top, bottom = np.median(array[: half // 2]), np.median(array[half + half // 2 :])
    return int(round(top / 8)) + 32 * int(round(bottom / 8))
