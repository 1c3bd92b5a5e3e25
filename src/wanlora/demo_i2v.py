"""`wanlora demo --recipe wan22-i2v`: the I2V-A14B recipe on tiny models and short videos.

The same shape as the text-to-video demo (demo.py): the tiny I2V-A14B experts (36 input
channels) in the real file layouts (models/tiny.py), a dataset of short generated videos
(real H.264 MP4s at 16 fps, dataset.video_writer) of a shape moving, each with its caption,
and a wanlora.toml pointing at them. Samples are videos from a first frame the demo writes
(`[sample] image`), one no training clip starts with.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .dataset.video_writer import write_mp4
from .demo import COLORS, DEMO_TRIGGER, demo_root, models_toml, paths_in_project
from .fsutil import atomic_path, atomic_write_text
from .recipes import PROJECT_FILE, Project, load_project

I2V_RECIPE = "wan22-i2v"
I2V_START_IMAGE = "sample_start.png"  # the first frame the demo's I2V samples start from

VIDEO_FPS = 16
VIDEO_SIZE = (48, 32)  # (width, height)
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


def write_demo_videos(
    folder: Path,
    colors: dict[str, tuple[int, int, int]],
    trigger: str,
    count: int = 4,
    frames: int = 10,
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


def i2v_demo_toml(epochs: int, models: dict[str, str]) -> str:
    return f"""\
# The built-in demo: the wan22-i2v recipe on tiny random models (CPU, no downloads).
# Only sizes differ from a real run: tiny models, 48x32 videos cut into 5-frame clips,
# {epochs} epochs.
recipe = "wan22-i2v"

[project]
name = "DemoI2V_v1"
author = "wanlora"
trigger = "{DEMO_TRIGGER}"

[dataset]
resolution = [48, 32]
target_frames = [5]
frame_extraction = "chunk"

[training]
max_train_epochs = {epochs}
save_every_n_epochs = {epochs}
save_state_every_n_steps = 8
max_data_loader_n_workers = 0

{models_toml(models)}
[sample]
prompts = ["{DEMO_TRIGGER}, a red circle slides from left to right across a plain blue background."]
image = "{I2V_START_IMAGE}"
steps = 4
width = 48
height = 32
frames = 5
"""


def create_i2v_demo_project(directory: str | Path, *, epochs: int = 3, seed: int = 0) -> Project:
    """Write the I2V-A14B demo project (models, videos, start image, wanlora.toml); refuses
    a non-demo folder."""
    from .models.tiny import write_tiny_models, write_tiny_wan22_models

    root = demo_root(directory)
    models = root / "models"
    base, wan22 = write_tiny_models(models, seed=seed), write_tiny_wan22_models(models, seed=seed)
    files = {
        "dit_high": wan22.i2v_high,
        "dit_low": wan22.i2v_low,
        "vae": base.vae,
        "text_encoder": base.text_encoder,
        "tokenizer": base.tokenizer,
    }
    relative = paths_in_project(root, files)
    dataset = root / "dataset"
    if not (dataset.is_dir() and any(dataset.glob("*.mp4"))):
        write_demo_videos(dataset, COLORS, DEMO_TRIGGER, seed=seed + 1)
    write_start_image(root / I2V_START_IMAGE, COLORS)
    config_file = root / PROJECT_FILE
    if not config_file.exists():
        atomic_write_text(config_file, i2v_demo_toml(epochs, relative))
    return load_project(root)
