"""The grid's media as data: URIs, within a size budget so the page stays one file to mail.

A video is embedded as an H.264 MP4 data URI (it plays inline from disk, no server): one
wider than VIDEO_WIDTH or larger than VIDEO_BYTES is re-encoded smaller (video_file.shrink_mp4);
one still too large, or past the page's VIDEO_BUDGET, is shown as its first frame only and
named in the page's note (its .mp4 stays in output/samples/). Stills are shrunk to
STILL_WIDTH (JPEG above JPEG_ABOVE_PIXELS). Base64 adds a third to every byte; `embedded`
counts what the page carries.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..sampling.video_file import shrink_mp4, video_info
from .figures import JPEG_ABOVE_PIXELS, data_uri

MIB = 1024**2
STILL_WIDTH = 384
VIDEO_WIDTH = 480
VIDEO_BYTES = 2 * MIB  # one video, after shrinking
VIDEO_BUDGET = 40 * MIB  # every video of the page together


@dataclass
class MediaBudget:
    left: int = VIDEO_BUDGET
    embedded: int = 0  # bytes of data: URIs in the page
    videos: int = 0
    stills: int = 0
    left_out: list[str] = field(default_factory=list)  # videos shown as stills only

    def still(self, path: Path, max_width: int = STILL_WIDTH) -> str | None:
        """A still's URI (shrunk); None if it does not decode."""
        try:
            with Image.open(path) as image:
                jpeg = image.width * image.height > JPEG_ABOVE_PIXELS
                uri = data_uri(image.convert("RGB"), max_width=max_width, jpeg=jpeg)
        except Exception:
            return None
        self.stills += 1
        self.embedded += len(uri)
        return uri

    def video(self, path: Path) -> str | None:
        """A video's URI, smaller if need be; None where it is left out (the still stays)."""
        info = video_info(path)
        if info is None:
            self.left_out.append(f"{path.name} (does not open)")
            return None
        width, _height, fps = info
        data = path.read_bytes()
        if width > VIDEO_WIDTH or len(data) > VIDEO_BYTES:
            data = shrink_mp4(data, VIDEO_WIDTH, round(fps))
        if len(data) > VIDEO_BYTES or len(data) > self.left:
            why = "over the page's video budget" if len(data) <= VIDEO_BYTES else "too large"
            self.left_out.append(f"{path.name} ({len(data) / MIB:.1f} MiB, {why})")
            return None
        self.left -= len(data)
        uri = f"data:video/mp4;base64,{base64.b64encode(data).decode('ascii')}"
        self.videos += 1
        self.embedded += len(uri)
        return uri
