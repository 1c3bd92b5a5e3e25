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

[models]
vae = "{models["vae"]}"
text_encoder = "{models["text_encoder"]}"
tokenizer = "{models["tokenizer"]}"

[experts.high]
dit = "{models["dit_high"]}"

[experts.low]
dit = "{models["dit_low"]}"

[sample]
prompts = ["{DEMO_TRIGGER}, a red circle on a blue background"]
steps = 4
width = 64
height = 64
"""


def write_demo_dataset(folder: Path, count: int = 18, seed: int = 0) -> list[Path]:
    """`count` images of coloured shapes with same-name captions describing them."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(count):
        fg, bg = rng.sample(sorted(COLORS), 2)
        shape = SHAPES[i % len(SHAPES)]
        width, height = SIZES[i % len(SIZES)]
        image = Image.new("RGB", (width, height), COLORS[bg])
        draw = ImageDraw.Draw(image)
        size = min(width, height) * rng.uniform(0.4, 0.7)
        cx, cy = width / 2 + rng.uniform(-8, 8), height / 2 + rng.uniform(-8, 8)
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[fg])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[fg])
        else:
            draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=COLORS[fg])
        path = folder / f"demo_{i:02d}.png"
        image.save(path)
        caption = (
            f"{DEMO_TRIGGER}, a {fg} {shape} on a plain {bg} background. "
            f"The {shape} is in the centre of the frame. Flat even lighting."
        )
        atomic_write_text(path.with_suffix(".txt"), caption + "\n")
        images.append(path)
    return images


def create_demo_project(directory: str | Path, *, epochs: int = 3, seed: int = 0) -> Project:
    """Write the demo project (models, dataset, wanlora.toml); refuses a non-demo folder."""
    from .models.tiny import write_tiny_models

    root = Path(directory).expanduser()
    config_file = root / PROJECT_FILE
    if config_file.exists() and "The built-in demo" not in config_file.read_text(encoding="utf-8"):
        raise WanloraError(
            f"{config_file} is a real project, not the demo",
            "run `wanlora demo` with another folder, e.g. `wanlora demo ./wanlora-demo`",
        )
    root.mkdir(parents=True, exist_ok=True)
    paths = write_tiny_models(root / "models", seed=seed)
    model_paths = {
        field: Path(getattr(paths, field)).resolve().relative_to(root.resolve()).as_posix()
        for field in ("dit_high", "dit_low", "vae", "text_encoder", "tokenizer")
    }
    dataset = root / "dataset"
    if not (dataset.is_dir() and any(dataset.glob("*.png"))):
        write_demo_dataset(dataset, seed=seed)
    if not config_file.exists():
        atomic_write_text(config_file, demo_toml(epochs, model_paths))
    return load_project(root)
