"""A sample clip as an H.264 .mp4 (PyAV), playable in browsers, ComfyUI and phones.

yuv420p (what every player decodes) halves the colour resolution, so both sides must be
even: an odd side loses its last pixel row/column. The clip is encoded in memory (the
caller writes the bytes atomically next to the PNG of its first frame) with a constant
frame rate and `crf` 18 (visually lossless for samples). (No `+faststart`: it needs a
second pass over a real file, and samples are small enough to be read whole.)

The H.264 encoder is libx264 inside PyAV's wheel; a PyAV built without it (some distro
packages) gets a one-line error naming the fix instead of a codec traceback.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from ..errors import WanloraError

CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"


def h264_available() -> bool:
    """Whether this PyAV can encode H.264 (its wheels ship libx264)."""
    try:
        av.codec.Codec(CODEC, "w")
    except Exception:
        return False
    return True


def even_size(width: int, height: int) -> tuple[int, int]:
    return width - width % 2, height - height % 2


def encode_mp4(frames: list[Image.Image], fps: int, *, crf: int = 18) -> bytes:
    """The frames as an H.264 MP4 at `fps` (all frames the size of the first)."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    if not h264_available():
        raise WanloraError(
            f"PyAV {av.__version__} has no H.264 encoder ({CODEC}): video samples cannot be written",
            "pip install --force-reinstall av (the PyPI wheels include libx264), "
            "or set [sample] frames = 1 for still samples",
        )
    width, height = even_size(*frames[0].size)
    if width < 2 or height < 2:
        raise WanloraError(
            f"a {frames[0].size} sample is too small for a video", "use 16x16 or more"
        )
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(CODEC, rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = PIXEL_FORMAT
        stream.options = {"crf": str(crf), "preset": "medium"}
        for image in frames:
            pixels = np.asarray(image.convert("RGB"))[:height, :width]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def read_frames(source) -> list[np.ndarray]:
    """Every frame of a video (a path or a file object) as (H, W, 3) uint8 arrays."""
    with av.open(source if not hasattr(source, "__fspath__") else str(source)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def shrink_mp4(data: bytes, max_width: int, fps: int, *, crf: int = 28) -> bytes:
    """A smaller copy of an MP4 (at most `max_width` wide, a higher crf): for the report."""
    frames = [Image.fromarray(f) for f in read_frames(io.BytesIO(data))]
    if frames and frames[0].width > max_width:
        size = (max_width, max(2, round(frames[0].height * max_width / frames[0].width)))
        frames = [f.resize(size, Image.LANCZOS) for f in frames]
    return encode_mp4(frames, fps, crf=crf)


def video_info(path) -> tuple[int, int, float] | None:
    """(width, height, fps) of a video file; None if it does not open."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.width, stream.height, float(stream.average_rate or 16)
    except Exception:
        return None
