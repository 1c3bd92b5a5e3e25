"""Sample videos as MP4 files (H.264 via PyAV), never overwriting, settings in the metadata.

The counterpart of sample.save_png for samples of more than one frame: `stem.mp4`, or
`stem_v2.mp4`, ... when taken (an atomic hard link, as for PNGs). The settings travel as
JSON in the container's `comment` tag (read_video_info reads them back).
"""

from __future__ import annotations

import itertools
import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..fsutil import create_temp_file

COMMENT_KEY = "comment"


def save_mp4(frames: np.ndarray, directory: Path, stem: str, info: dict, fps: float) -> Path:
    """uint8 (F, H, W, 3) frames -> `directory/stem.mp4` (or `_v2`, ...); returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    count, height, width, _ = frames.shape
    fd, tmp = create_temp_file(directory, prefix=".tmp-", suffix=".mp4")  # the user's umask
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4") as container:
            container.metadata[COMMENT_KEY] = json.dumps(info, ensure_ascii=False)
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            # H.264 in yuv420p needs even sides; every sample size is a multiple of 16
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "12"}
            for index in range(count):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[index]), "rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        for n in itertools.count(1):
            path = directory / (f"{stem}.mp4" if n == 1 else f"{stem}_v{n}.mp4")
            try:
                os.link(tmp, path)  # atomic, and fails if the name is taken
                return path
            except FileExistsError:
                continue
    finally:
        os.unlink(tmp)
    raise AssertionError("unreachable")


def read_video_info(path: Path) -> dict:
    """The settings saved with one of our MP4s ({} for other files)."""
    try:
        with av.open(str(path)) as container:
            return json.loads(container.metadata.get(COMMENT_KEY, "{}"))
    except Exception:
        return {}
