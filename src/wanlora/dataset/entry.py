"""One dataset folder and the settings its images train with: `DatasetEntry`.

Its own module so that the two places that make entries, `sources` (a project's
wanlora.toml `[dataset]`) and `musubi_toml` (a musubi-tuner dataset.toml), share the type
without importing each other: sources -> musubi_toml -> entry, one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetEntry:
    """One image folder and the settings its images are trained with."""

    image_directory: Path
    caption_extension: str = ".txt"
    resolution: tuple[int, int] = (960, 960)
    batch_size: int = 1
    enable_bucket: bool = True
    bucket_no_upscale: bool = False
    num_repeats: int = 1
    reso_step: int = 16  # bucket sides' step: the task's (32 for TI2V-5B), not a musubi key
    cache_directory: Path | None = None  # kept for writing musubi files back; we cache elsewhere
    source: str = "wanlora.toml [dataset]"  # where these settings came from, for messages


def dataset_settings(project) -> dict:
    """The per-dataset settings of wanlora.toml's `[dataset]` that image and video entries
    share (`project`: a recipes.Project), for DatasetEntry(...) and VideoEntry(...)."""
    settings = project.config.dataset
    return dict(
        caption_extension=settings.caption_extension,
        resolution=tuple(settings.resolution),
        batch_size=settings.batch_size,
        enable_bucket=settings.enable_bucket,
        bucket_no_upscale=settings.bucket_no_upscale,
        num_repeats=settings.num_repeats,
        reso_step=project.config.size_step,
        source=f"{project.config_file} [dataset]",
    )
