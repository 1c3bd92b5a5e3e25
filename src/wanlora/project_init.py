"""Create a user's project folder (`wanlora init`)."""

from __future__ import annotations

from pathlib import Path

from .errors import WanloraError
from .fsutil import atomic_write_text
from .recipes import PROJECT_FILE, Project, load_project, merge_config, project_toml
from .recipes.project import read_overrides, tomllib


def init_project(
    directory: str | Path,
    recipe: str,
    name: str,
    author: str,
    trigger: str | None = None,
    *,
    force: bool = False,
) -> Project:
    """Write DIR/wanlora.toml and DIR/dataset/; refuse to replace a wanlora.toml unless `force`."""
    root = Path(directory).expanduser()
    config_file = root / PROJECT_FILE
    if config_file.exists() and not force:
        raise WanloraError(
            f"{config_file} already exists",
            "edit it, pick another folder, or pass --force to replace it",
        )
    text = project_toml(recipe, name, author, trigger)
    # validate before writing anything: a bad name or recipe must leave no trace
    merge_config(tomllib.loads(text), source=str(config_file))
    if config_file.exists():  # --force: keep the old file next to the new one
        backup = config_file.with_name(PROJECT_FILE + ".bak")
        atomic_write_text(backup, config_file.read_text(encoding="utf-8"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset").mkdir(exist_ok=True)
    atomic_write_text(config_file, text)
    read_overrides(config_file)
    return load_project(root)


def next_steps(root: Path, videos: bool = False) -> str:
    """What to do after `wanlora init`; `videos`: an image-to-video recipe (trains on clips)."""
    first = (
        f"put your video clips (.mp4, .mov, ... and same-name .txt captions) into {root / 'dataset'}"
        if videos
        else f"put your 18 images (and optional same-name .txt captions) into {root / 'dataset'}"
    )
    return f"""Next steps:
  1. {first}
  2. wanlora caption {root}      # write missing captions (optional)
  3. wanlora check {root}        # lint the dataset before paying for a GPU
  4. wanlora download {root}     # fetch the model files
  5. wanlora train {root}        # cache, then train the recipe's LoRAs"""
