"""`wanlora demo`: a real project folder with tiny built-in models and a generated dataset.

Everything goes through the same code as a real run: the tiny models are written to disk in
the real file layouts (DiT/VAE safetensors, umT5 .pth, a tokenizer folder) and the project's
wanlora.toml points at them. Only sizes differ: small images, a few epochs.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from .errors import WanloraError
from .fsutil import atomic_write_text
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


def paths_in_project(root: Path, files: dict[str, str | Path]) -> dict[str, str]:
    """Model files as wanlora.toml names them: relative to the project, `/`-separated."""
    return {
        key: Path(path).resolve().relative_to(root.resolve()).as_posix()
        for key, path in files.items()
    }


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
# validation on 6 of the 18 images, at the start and the end only: the demo stays quick
[validation]
max_items = 6
every_n_epochs = {epochs}

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


def demo_root(directory: str | Path) -> Path:
    """The demo's folder, created; refuses a folder holding a real (non-demo) project."""
    root = Path(directory).expanduser()
    config_file = root / PROJECT_FILE
    if config_file.exists() and "The built-in demo" not in config_file.read_text(encoding="utf-8"):
        raise WanloraError(
            f"{config_file} is a real project, not the demo",
            "run `wanlora demo` with another folder, e.g. `wanlora demo ./wanlora-demo`",
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def create_demo_project(directory: str | Path, *, epochs: int = 3, seed: int = 0) -> Project:
    """Write the demo project (models, dataset, wanlora.toml); refuses a non-demo folder."""
    from .models.tiny import write_tiny_models

    root = demo_root(directory)
    config_file = root / PROJECT_FILE
    paths = write_tiny_models(root / "models", seed=seed)
    fields = ("dit_high", "dit_low", "vae", "text_encoder", "tokenizer")
    model_paths = paths_in_project(root, {field: getattr(paths, field) for field in fields})
    dataset = root / "dataset"
    if not (dataset.is_dir() and any(dataset.glob("*.png"))):
        write_demo_dataset(dataset, seed=seed + 1)  # seed 1: a dataset `wanlora check` finds clean
    if not config_file.exists():
        atomic_write_text(config_file, demo_toml(epochs, model_paths))
    return load_project(root)
