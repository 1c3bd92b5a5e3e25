"""`wanlora demo`: a real project folder with tiny built-in models and a generated dataset.

Everything goes through the same code as a real run: the tiny models are written to disk in
the real file layouts (DiT/VAE safetensors, umT5 .pth, a tokenizer folder) and the project's
wanlora.toml points at them. Only sizes differ: small images, a few epochs.
`--recipe wan22-i2v`: the tiny I2V-A14B experts, and a dataset of short generated videos
(real H.264 MP4s at 16 fps, written with PyAV) of a shape moving, each with its caption.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .dataset.video_writer import write_mp4
from .errors import WanloraError
from .fsutil import atomic_path, atomic_write_text
from .recipes import PROJECT_FILE, Project, load_project

DEMO_TRIGGER = "flat demo shapes"
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
# (width, height): a spread of aspect ratios, so several buckets are used
SIZES = [(96, 96), (128, 96), (96, 128), (160, 90), (90, 160), (112, 112)]


def models_toml(models: dict[str, str]) -> str:
    """The [models] and [experts.*] tables for model files at these paths."""
    return f"""\
[models]
vae = "{models["vae"]}"
text_encoder = "{models["text_encoder"]}"
tokenizer = "{models["tokenizer"]}"

[experts.high]
dit = "{models["dit_high"]}"

[experts.low]
dit = "{models["dit_low"]}"
"""


def demo_toml(epochs: int, models: dict[str, str]) -> str:
    return f"""\
# The built-in demo: the wan22-t2v recipe on tiny random models (CPU, no downloads).
# Only sizes differ from a real run: tiny models, 64x64 buckets, {epochs} epochs.
recipe = "wan22-t2v"

[project]
name = "Demo_v1"
author = "wanlora"
trigger = "{DEMO_TRIGGER}"

[dataset]
resolution = [64, 64]

[training]
max_train_epochs = {epochs}
save_every_n_epochs = {epochs}
save_state_every_n_steps = 18
max_data_loader_n_workers = 0

{models_toml(models)}
[sample]
prompts = ["{DEMO_TRIGGER}, a red circle on a blue background"]
steps = 4
width = 64
height = 64
"""


POSITIONS = {  # name -> where the centre goes, as a fraction of (width, height)
    "in the centre of the frame": (0.5, 0.5),
    "in the upper left corner": (0.3, 0.3),
    "near the lower right corner": (0.7, 0.7),
    "close to the top edge": (0.5, 0.3),
    "along the bottom edge": (0.5, 0.72),
}
CORNERS = {
    "at top left": (0.1, 0.1),
    "at top right": (0.9, 0.1),
    "at bottom left": (0.1, 0.9),
    "at bottom right": (0.9, 0.9),
}
SIZES_WORDS = {"small": 0.35, "medium-sized": 0.5, "large": 0.7}
LIGHTING = (
    "Flat even lighting.",
    "Soft light without shadows.",
    "Bright uniform colours, no texture.",
)


def _gradient(
    size: tuple[int, int], color: tuple[int, int, int], horizontal: bool, flip: bool
) -> Image.Image:
    """A background fading from `color` to a darker shade (so images differ beyond the shape)."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    steps = width if horizontal else height
    for k in range(steps):
        f = 1.0 - 0.6 * ((steps - 1 - k) if flip else k) / max(steps - 1, 1)
        shade = tuple(int(c * f) for c in color)
        draw.line([(k, 0), (k, height)] if horizontal else [(0, k), (width, k)], fill=shade)
    return image


def write_demo_dataset(folder: Path, count: int = 18, seed: int = 0) -> list[Path]:
    """`count` images of coloured shapes, each with its own caption describing it."""
    rng = random.Random(seed)
    combos = [(fg, bg, shape) for fg in COLORS for bg in COLORS if fg != bg for shape in SHAPES]
    rng.shuffle(combos)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (fg, bg, shape) in enumerate(combos[:count]):
        width, height = SIZES[i % len(SIZES)]
        position, (fx, fy) = rng.choice(sorted(POSITIONS.items()))
        size_word, fraction = rng.choice(sorted(SIZES_WORDS.items()))
        horizontal, flip = rng.random() < 0.5, rng.random() < 0.5
        image = _gradient((width, height), COLORS[bg], horizontal=horizontal, flip=flip)
        dark_side = ("left" if flip else "right") if horizontal else ("top" if flip else "bottom")
        draw = ImageDraw.Draw(image)
        dot_color = rng.choice([c for c in sorted(COLORS) if c not in (fg, bg)])
        dot_name, (dx, dy) = rng.choice(sorted(CORNERS.items()))
        r = min(width, height) * 0.08
        draw.ellipse(
            (width * dx - r, height * dy - r, width * dx + r, height * dy + r),
            fill=COLORS[dot_color],
        )
        size = min(width, height) * fraction
        cx, cy = width * fx, height * fy
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[fg])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[fg])
        else:
            draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=COLORS[fg])
        path = folder / f"demo_{i:02d}.png"
        image.save(path)
        orientation = "wide" if width > height else "tall" if height > width else "square"
        caption = (
            f"{DEMO_TRIGGER}, a {size_word} {fg} {shape} on a {bg} background, darker at the {dark_side}. "
            f"A tiny {dot_color} dot {dot_name}. {orientation.capitalize()} frame; the {shape} sits {position}. "
            f"{LIGHTING[i % 3]}"
        )
        atomic_write_text(path.with_suffix(".txt"), caption + "\n")
        images.append(path)
    return images


# --- the I2V demo: short videos of a coloured shape moving (real H.264 MP4s, 16 fps) ---

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


I2V_START_IMAGE = "sample_start.png"  # the first frame the demo's I2V samples start from
DEMO_RECIPES = ("wan22-t2v", "wan22-i2v")


def create_demo_project(
    directory: str | Path, *, epochs: int = 3, seed: int = 0, recipe: str = "wan22-t2v"
) -> Project:
    """Write the demo project (models, dataset, wanlora.toml); refuses a non-demo folder.

    recipe "wan22-i2v": the I2V-A14B experts and a dataset of short generated videos."""
    from .models.tiny import write_tiny_models, write_tiny_wan22_models

    if recipe not in DEMO_RECIPES:
        raise WanloraError(
            f"no demo for recipe '{recipe}'", f"use one of: {', '.join(DEMO_RECIPES)}"
        )

    root = Path(directory).expanduser()
    config_file = root / PROJECT_FILE
    if config_file.exists() and "The built-in demo" not in config_file.read_text(encoding="utf-8"):
        raise WanloraError(
            f"{config_file} is a real project, not the demo",
            "run `wanlora demo` with another folder, e.g. `wanlora demo ./wanlora-demo`",
        )
    root.mkdir(parents=True, exist_ok=True)
    paths = write_tiny_models(root / "models", seed=seed)
    files = {
        f: getattr(paths, f) for f in ("dit_high", "dit_low", "vae", "text_encoder", "tokenizer")
    }
    if recipe == "wan22-i2v":
        wan22 = write_tiny_wan22_models(root / "models", seed=seed)
        files |= {"dit_high": wan22.i2v_high, "dit_low": wan22.i2v_low}
    model_paths = {
        field: Path(path).resolve().relative_to(root.resolve()).as_posix()
        for field, path in files.items()
    }
    dataset = root / "dataset"
    if recipe == "wan22-i2v":
        if not (dataset.is_dir() and any(dataset.glob("*.mp4"))):
            write_demo_videos(dataset, COLORS, DEMO_TRIGGER, seed=seed + 1)
        write_start_image(root / I2V_START_IMAGE, COLORS)
        text = i2v_demo_toml(epochs, model_paths)
    else:
        if not (dataset.is_dir() and any(dataset.glob("*.png"))):
            write_demo_dataset(dataset, seed=seed + 1)  # seed 1: `wanlora check` finds it clean
        text = demo_toml(epochs, model_paths)
    if not config_file.exists():
        atomic_write_text(config_file, text)
    return load_project(root)
