"""Frames to a video file with PyAV: H.264 in MP4 at a constant frame rate.

The demos (demo_i2v.py, demo_ti2v.py) write their generated training videos with it.
Written atomically (fsutil.atomic_path): a half-written video is never left under the
final name. (Samples are encoded by sampling/video_file.py, which sits above this layer
and adds the quality settings and the H.264-missing error a user's run needs.)
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..fsutil import atomic_path


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float = 16.0) -> Path:
    """uint8 (H, W, 3) frames -> an H.264 MP4 at `fps` (sides must be even for yuv420p)."""
    height, width = np.asarray(frames[0]).shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(Path(path)) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
