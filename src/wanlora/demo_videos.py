"""The demo's generated video dataset: short clips of a coloured shape moving, via PyAV.

Each video is a real H.264 MP4 (what a user's camera or phone writes), 16 fps (the Wan
A14B models' rate, so no frame-rate conversion is needed), with a same-name caption that
says what moves where. A fresh first frame (`write_start_image`) is what I2V samples
start from. Everything comes from a seed; nothing binary lives in git.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from .fsutil import atomic_path, atomic_write_text

VIDEO_FPS = 16
VIDEO_SIZE = (64, 48)  # (width, height)
MOTIONS = {  # name -> (start, end) of the centre, as fractions of (width, height)
    "from left to right": ((0.2, 0.5), (0.8, 0.5)),
    "from right to left": ((0.8, 0.5), (0.2, 0.5)),
    "from top to bottom": ((0.5, 0.25), (0.5, 0.75)),
    "from bottom to top": ((0.5, 0.75), (0.5, 0.25)),
}


def shape_frame(
    fg: tuple[int, int, int], bg: tuple[int, int, int], shape: str, centre, size=VIDEO_SIZE
) -> np.ndarray:
    """One uint8 (H, W, 3) frame: `shape` in `fg` centred at `centre` (pixels) on `bg`."""
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    r = min(size) * 0.22
    cx, cy = centre
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fg)
    elif shape == "square":
        draw.rectangle(box, fill=fg)
    else:
        draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fg)
    return np.asarray(image)


def motion_frames(
    fg, bg, shape: str, motion: str, frames: int, size=VIDEO_SIZE
) -> list[np.ndarray]:
    (x0, y0), (x1, y1) = MOTIONS[motion]
    w, h = size
    return [
        shape_frame(
            fg,
            bg,
            shape,
            (w * (x0 + (x1 - x0) * k / (frames - 1)), h * (y0 + (y1 - y0) * k / (frames - 1))),
            size,
        )
        for k in range(frames)
    ]


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = VIDEO_FPS) -> Path:
    """H.264 in MP4 at a constant `fps`, written atomically."""
    height, width = frames[0].shape[:2]
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_demo_videos(
    folder: Path,
    colors: dict[str, tuple[int, int, int]],
    trigger: str,
    count: int = 6,
    frames: int = 18,
    seed: int = 0,
) -> list[Path]:
    """`count` videos of `frames` frames, each with its own caption."""
    rng = random.Random(seed)
    names = sorted(colors)
    combos = [
        (fg, bg, s, m)
        for fg in names
        for bg in names
        if fg != bg
        for s in ("circle", "square", "triangle")
        for m in sorted(MOTIONS)
    ]
    rng.shuffle(combos)
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for i, (fg, bg, shape, motion) in enumerate(combos[:count]):
        path = write_mp4(
            folder / f"clip_{i:02d}.mp4",
            motion_frames(colors[fg], colors[bg], shape, motion, frames),
        )
        caption = f"{trigger}, a {fg} {shape} slides {motion} across a plain {bg} background."
        atomic_write_text(path.with_suffix(".txt"), caption + "\n")
        videos.append(path)
    return videos


def write_start_image(path: Path, colors: dict[str, tuple[int, int, int]]) -> Path:
    """The first frame I2V samples start from: a shape no training clip starts with."""
    pixels = shape_frame(
        colors["red"], colors["blue"], "circle", (VIDEO_SIZE[0] * 0.3, VIDEO_SIZE[1] * 0.5)
    )
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    return path
