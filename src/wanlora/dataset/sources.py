"""Where a project's images and videos come from: dataset folders with their settings.

A project reads either its `dataset.directory` folder with the `[dataset]` settings of
wanlora.toml, or a musubi-tuner dataset.toml named by `dataset.dataset_toml` (see
`musubi_toml`). Either way the result is a list of image `DatasetEntry` and a list of
video `VideoEntry` (see `video_sources`; videos in the dataset folder count too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..recipes.project import Project
from .discovery import find_images
from .video_sources import VideoEntry, folder_has_videos, frame_settings, project_video_entry


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
    cache_directory: Path | None = None  # kept for writing musubi files back; we cache elsewhere
    source: str = "wanlora.toml [dataset]"  # where these settings came from, for messages


@dataclass(frozen=True)
class DatasetSources:
    entries: list[DatasetEntry]
    ignored_keys: list[str] = field(default_factory=list)
    dataset_toml: Path | None = None
    videos: list[VideoEntry] = field(default_factory=list)


def dataset_toml_path(project: Project) -> Path | None:
    value = project.config.dataset.dataset_toml
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else project.root / path


def project_entry(project: Project) -> DatasetEntry:
    """The wanlora.toml `[dataset]` settings as an entry (also the defaults for a dataset.toml)."""
    settings = project.config.dataset
    return DatasetEntry(
        image_directory=project.dataset_dir,
        caption_extension=settings.caption_extension,
        resolution=tuple(settings.resolution),
        batch_size=settings.batch_size,
        enable_bucket=settings.enable_bucket,
        bucket_no_upscale=settings.bucket_no_upscale,
        num_repeats=settings.num_repeats,
        source=f"{project.config_file} [dataset]",
    )


def dataset_sources(project: Project) -> DatasetSources:
    """The project's dataset folders and settings (raises WanloraError on a bad dataset.toml)."""
    from .musubi_toml import read_dataset_toml

    toml_path = dataset_toml_path(project)
    if toml_path is None:
        if not folder_has_videos(project.dataset_dir):
            return DatasetSources(entries=[project_entry(project)])
        # videos in the dataset folder: a video dataset next to the images (if any)
        images = [project_entry(project)] if find_images(project.dataset_dir) else []
        return DatasetSources(entries=images, videos=[project_video_entry(project)])
    parsed = read_dataset_toml(
        toml_path,
        defaults=project_entry(project),
        video_defaults=frame_settings(project.config.dataset),
    )
    return DatasetSources(
        entries=parsed.datasets,
        ignored_keys=parsed.ignored_keys,
        dataset_toml=toml_path,
        videos=parsed.videos,
    )
