"""Reading training videos with PyAV: what a file holds, and its frames as RGB images.

A "video" is a video file (musubi-tuner's extensions, each in lower or upper case) or a folder
of images, whose frames are the folder's images sorted by path (the same files and order as
an image dataset folder). Frames are decoded with PyAV the way the reference trainer does it:
`container.decode(video=0)`, each frame converted with `frame.to_image()` (RGB, 8 bits), or
for a folder each image opened with PIL and converted to RGB.

`probe_video` decodes the whole stream once (without converting pixels) so that the frame
count is the number of frames the trainer will really get, not the container's claim (which
is 0 or wrong for many webm, mkv and damaged files). It also reads the frame rate and tells
a variable frame rate from a constant one by the spread of the frames' timestamps.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import av
from PIL import Image

from ..errors import WanloraError
from .discovery import find_images
from .images import image_size, load_rgb

# musubi-tuner's VIDEO_EXTENSIONS: each extension in lower or upper case (not mixed case).
VIDEO_EXTENSIONS = (
    ".mp4",
    ".webm",
    ".avi",
    ".mkv",
    ".mov",
    ".flv",
    ".wmv",
    ".m4v",
    ".mpg",
    ".mpeg",
)
# Bare video streams without a container: they carry no frame timing, and FFmpeg reports a
# made-up 25 fps for them, so their rate counts as unknown.
RAW_STREAM_FORMATS = frozenset({"h264", "hevc", "mjpeg", "m4v", "mpegvideo", "rawvideo"})
# A timestamp step further than this from the median step makes the frame rate variable.
VARIABLE_FPS_TOLERANCE = 0.5
REENCODE_FIX = "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`"


def is_video_name(path: Path) -> bool:
    suffix = Path(path).suffix
    return suffix in VIDEO_EXTENSIONS or suffix in tuple(e.upper() for e in VIDEO_EXTENSIONS)


def is_mixed_case_video_name(path: Path) -> bool:
    """A name like clip.Mp4: a video extension the reference trainer does not match."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS and not is_video_name(path)


def find_videos(directory: str | Path) -> list[Path]:
    """Video files directly in `directory` (not recursive, hidden files skipped), sorted by path."""
    directory = Path(directory)
    return sorted(
        p
        for p in directory.iterdir()
        if is_video_name(p) and not p.name.startswith(".") and p.is_file()
    )


@dataclass(frozen=True)
class VideoInfo:
    """What one video holds, as the trainer will decode it."""

    path: Path
    frame_count: int
    width: int  # of the first frame
    height: int
    fps: float | None  # the stream's average rate; None when unknown (and for image folders)
    variable_fps: bool = False
    is_folder: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, first-frame size and frame rate of a video file or image folder.

    Raises WanloraError (naming the file and the fix) for a missing, unreadable or corrupt
    file, a file without a video stream, and a video or folder without frames.
    """
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise WanloraError(f"{path}: video not found", "fix the path or add the file") from None
    except OSError as exc:
        raise WanloraError(
            f"{path}: cannot read video ({exc.strerror or exc})", "check the file or link"
        ) from None
    return _probe_file(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _probe_file(path: Path, size: int, mtime_ns: int) -> VideoInfo:
    # Keyed on size and mtime: one decode per file and process, redone when the file changes.
    with readable_video(path), av.open(str(path)) as container:
        if not container.streams.video:
            raise WanloraError(
                f"{path}: has no video stream (audio only, or not a video)",
                "remove it from the dataset, or export the video track",
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decoding threads: same frames, faster
        count, first, stamps = 0, None, []
        for frame in container.decode(stream):
            if first is None:
                first = (frame.width, frame.height)
            if frame.pts is not None:
                stamps.append(frame.pts)
            count += 1
        rate = stream.average_rate or stream.guessed_rate
        raw = container.format.name in RAW_STREAM_FORMATS
    if count == 0 or first is None:
        raise WanloraError(f"{path}: the video has no decodable frames", REENCODE_FIX)
    fps = float(rate) if rate and not raw else None
    return VideoInfo(path, count, first[0], first[1], fps, _variable(stamps))


def _variable(stamps: list[int]) -> bool:
    """True when the frames' timestamp steps are not all about the same (one tick of slack)."""
    steps = [b - a for a, b in pairwise(sorted(stamps)) if b > a]
    if len(steps) < 2:
        return False
    median = statistics.median(steps)
    slack = VARIABLE_FPS_TOLERANCE * median + 1
    return any(abs(step - median) > slack for step in steps)


def _probe_folder(path: Path) -> VideoInfo:
    if not os.access(path, os.R_OK | os.X_OK):
        raise WanloraError(f"{path}: permission denied", "make the folder readable")
    frames = find_images(path)
    if not frames:
        raise WanloraError(
            f"{path}: folder of frames holds no images (png, jpg, jpeg, webp or bmp)",
            "put the video's frames there as images, or fix the path",
        )
    width, height = image_size(frames[0])
    return VideoInfo(path, len(frames), width, height, None, is_folder=True)


def decode_frames(path: str | Path, indices: Iterable[int]) -> Iterator[tuple[int, Image.Image]]:
    """(index, RGB image) for each wanted frame index of `path`, in increasing index order.

    Decoding stops after the last wanted frame. Frames are numbered from 0 in decode order
    (presentation order), as the reference counts them.
    """
    path = Path(path)
    wanted = sorted(set(indices))
    if not wanted:
        return
    if path.is_dir():
        frames = find_images(path)
        for index in wanted:
            if index >= len(frames):
                raise _too_short(path, index)
            yield index, load_rgb(frames[index])
        return
    with readable_video(path), av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        position = 0
        for index, frame in enumerate(container.decode(stream)):
            if index == wanted[position]:
                yield index, frame.to_image()
                position += 1
                if position == len(wanted):
                    return
    raise _too_short(path, wanted[position])


def _too_short(path: Path, index: int) -> WanloraError:
    return WanloraError(
        f"{path}: has no frame {index} (the video changed since it was listed?)",
        "run the command again",
    )


@contextlib.contextmanager
def readable_video(path: Path) -> Iterator[None]:
    """Turn PyAV's and the OS's errors while reading `path` into a WanloraError naming it."""
    try:
        yield
    except WanloraError:
        raise
    except PermissionError:
        raise WanloraError(f"{path}: permission denied", "make the file readable") from None
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        reason = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
        raise WanloraError(
            f"{path}: not a readable video (empty, truncated or corrupt: {reason})",
            REENCODE_FIX + ", or remove it",
        ) from None
