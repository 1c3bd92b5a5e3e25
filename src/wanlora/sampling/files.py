"""Sample files: a PNG carrying its settings, and for a clip an .mp4 beside it.

    stem.png   the still (a clip's first frame), settings as JSON in a `wanlora` text chunk
    stem.mp4   the clip (frames > 1), H.264 (video_file.py)

Files are never replaced: a stem in use gets `_v2`, `_v3`, ... and a PNG and its video always
share the same version (both names are claimed, or neither). Each file is written to a
temporary name first and published with os.link, which is atomic and fails on a taken name.
A clip's PNG says so in its settings (`"video": true`, with `frames` and `fps`); its video is
the file of the same name with `.mp4` (`video_of`), so the report finds clips by reading
PNGs only.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..fsutil import create_temp_file
from .video_file import encode_mp4

PNG_KEY = "wanlora"  # the PNG text chunk holding an image's settings as JSON


@dataclass
class SavedSample:
    image: Path  # the PNG (a clip's first frame)
    video: Path | None  # the .mp4, for more than one frame


def png_bytes(image: Image.Image, info: dict) -> bytes:
    pnginfo = PngInfo()
    pnginfo.add_text(PNG_KEY, json.dumps(info, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def save_new_files(directory: Path, stem: str, payloads: dict[str, bytes]) -> dict[str, Path]:
    """Write `stem<suffix>` for every (suffix, bytes), all under one free version of the stem."""
    directory.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for suffix, data in payloads.items():
            fd, tmp = create_temp_file(directory, prefix=".tmp-", suffix=suffix)  # user's umask
            temps[suffix] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for n in itertools.count(1):
            name = stem if n == 1 else f"{stem}_v{n}"
            claimed: dict[str, Path] = {}
            try:
                for suffix, tmp in temps.items():
                    path = directory / f"{name}{suffix}"
                    os.link(tmp, path)  # atomic, and fails if the name is taken
                    claimed[suffix] = path
                return claimed
            except FileExistsError:
                for path in claimed.values():  # ours, linked a moment ago: give the name back
                    path.unlink()
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def save_png(image: Image.Image, directory: Path, stem: str, info: dict) -> Path:
    """Save as `stem.png`, or `stem_v2.png`, ... if taken; never replaces a file."""
    return save_new_files(directory, stem, {".png": png_bytes(image, info)})[".png"]


def save_sample(
    frames: list[Image.Image], directory: Path, stem: str, info: dict, *, fps: int
) -> SavedSample:
    """One frame: `stem.png`. More: `stem.mp4` and the PNG of its first frame."""
    if len(frames) == 1:
        return SavedSample(save_png(frames[0], directory, stem, info), None)
    video = encode_mp4(frames, fps)
    # the PNG cannot name its video (the version is only known once both names are
    # claimed): it says it has one, and video_of finds it by name
    info = info | {"frames": len(frames), "fps": fps, "video": True}
    paths = save_new_files(directory, stem, {".mp4": video, ".png": png_bytes(frames[0], info)})
    return SavedSample(paths[".png"], paths[".mp4"])


def video_of(png: Path, info: dict) -> Path | None:
    """The .mp4 that a sample PNG is the first frame of (None for a still)."""
    if not info.get("video"):
        return None
    path = png.with_suffix(".mp4")
    return path if path.exists() else None


def read_png_info(path: Path) -> dict:
    """The settings saved with one of our PNGs ({} for other images)."""
    try:
        with Image.open(path) as image:
            return json.loads(image.text.get(PNG_KEY, "{}"))  # type: ignore[attr-defined]
    except Exception:
        return {}


def read_video_info(path: Path) -> dict:
    """The settings of one of our .mp4 samples: those of the PNG of its first frame beside it
    ({} for other files)."""
    return read_png_info(path.with_suffix(".png"))
