"""`wanlora demo --recipe wan22-ti2v-5b`: the TI2V-5B recipe on tiny models, images and videos.

The same shape as the text-to-video demo (demo.py): the tiny TI2V-5B DiT and Wan 2.2 VAE in
the real file layouts (models/tiny.py), a generated dataset, a wanlora.toml pointing at
them. The dataset mixes 6 images (1-frame text-to-image items) and 3 short videos written
with PyAV (dataset.video_writer: H.264 at 24 fps, the 5B model's rate) of a shape moving across the frame: clips of
9 frames train text-to-video or image-to-video (`[training] ti2v_i2v_share`). Samples are
9 frames, text-to-video (`wanlora sample --image` for image-to-video).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .dataset.video_writer import write_mp4
from .demo import COLORS, DEMO_TRIGGER, demo_root, paths_in_project, write_demo_dataset
from .fsutil import atomic_write_text
from .recipes import Project, load_project

TI2V_RECIPE = "wan22-ti2v-5b"
DEMO_FPS = 24  # the 5B model's rate: the clips keep every frame
VIDEO_FRAMES = 12
VIDEO_SIZE = (96, 64)
# (shape colour, background colour, direction) of each demo video
VIDEOS = [
    ("red", "blue", "left to right"),
    ("yellow", "purple", "top to bottom"),
    ("white", "green", "right to left"),
]


def ti2v_demo_toml(epochs: int, models: dict[str, str]) -> str:
    return f"""\
# The built-in demo: the wan22-ti2v-5b recipe on tiny random models (CPU, no downloads).
# Only sizes differ from a real run: tiny models, 64x64 buckets, 9-frame clips, {epochs} epochs.
recipe = "{TI2V_RECIPE}"

[project]
name = "Demo5B_v1"
author = "wanlora"
trigger = "{DEMO_TRIGGER}"

[dataset]
resolution = [64, 64]
target_frames = [9]

[training]
max_train_epochs = {epochs}
save_every_n_epochs = {epochs}
save_state_every_n_steps = 9
max_data_loader_n_workers = 0

[models]
vae = "{models["vae22"]}"
text_encoder = "{models["text_encoder"]}"
tokenizer = "{models["tokenizer"]}"

[experts.main]
dit = "{models["ti2v"]}"

[sample]
prompts = ["{DEMO_TRIGGER}, a red circle moving from left to right on a blue background"]
steps = 4
width = 64
height = 64
frames = 9
"""


def _video_frame(index: int, fg: str, bg: str, direction: str) -> np.ndarray:
    width, height = VIDEO_SIZE
    image = Image.new("RGB", VIDEO_SIZE, COLORS[bg])
    f = index / (VIDEO_FRAMES - 1)
    r = height * 0.22
    if direction == "left to right":
        cx, cy = r + f * (width - 2 * r), height / 2
    elif direction == "right to left":
        cx, cy = width - r - f * (width - 2 * r), height / 2
    else:
        cx, cy = width / 2, r + f * (height - 2 * r)
    ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLORS[fg])
    return np.asarray(image)


def write_demo_video(path: Path, fg: str, bg: str, direction: str) -> Path:
    """A short H.264 MP4 (PyAV) of a `fg` circle moving `direction` over `bg`."""
    frames = [_video_frame(index, fg, bg, direction) for index in range(VIDEO_FRAMES)]
    return write_mp4(path, frames, fps=DEMO_FPS)


def write_demo_videos(folder: Path) -> list[Path]:
    """The demo videos, each with a caption saying what moves where."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (fg, bg, direction) in enumerate(VIDEOS):
        path = write_demo_video(folder / f"demo_video_{i}.mp4", fg, bg, direction)
        caption = (
            f"{DEMO_TRIGGER}, a {fg} circle moving from {direction} on a {bg} background. "
            "Flat even lighting."
        )
        atomic_write_text(path.with_suffix(".txt"), caption + "\n")
        paths.append(path)
    return paths


def create_ti2v_demo_project(directory: str | Path, *, epochs: int = 2, seed: int = 0) -> Project:
    """Write the TI2V-5B demo project (models, images, videos, wanlora.toml)."""
    from .models.tiny import write_tiny_models, write_tiny_wan22_models

    root = demo_root(directory)
    models = root / "models"
    base, wan22 = write_tiny_models(models, seed=seed), write_tiny_wan22_models(models, seed=seed)
    files = {
        "vae22": wan22.vae22,
        "ti2v": wan22.ti2v,
        "text_encoder": base.text_encoder,
        "tokenizer": base.tokenizer,
    }
    relative = paths_in_project(root, files)
    dataset = root / "dataset"
    if not (dataset.is_dir() and any(dataset.glob("*.png"))):
        write_demo_dataset(dataset, count=6, seed=seed + 1)
    if not any(dataset.glob("*.mp4")):
        write_demo_videos(dataset)
    config_file = root / "wanlora.toml"
    if not config_file.exists():
        atomic_write_text(config_file, ti2v_demo_toml(epochs, relative))
    return load_project(root)
