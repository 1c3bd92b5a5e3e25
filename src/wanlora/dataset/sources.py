"""Where a project's images and videos come from: dataset folders with their settings.

A project reads either its `dataset.directory` folder with the `[dataset]` settings of
wanlora.toml, or a musubi-tuner dataset.toml named by `dataset.dataset_toml` (see
`musubi_toml`). Either way the result is a list of image `DatasetEntry` and a list of
video `VideoEntry` (see `video_sources`; videos in the dataset folder count too).

Imports go one way: this module reads and writes dataset.toml files through `musubi_toml`,
which knows only `entry` and never imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..recipes.project import Project
from .discovery import find_images
from .entry import DatasetEntry, dataset_settings
from .musubi_toml import dataset_toml_text, read_dataset_toml
from .video_sources import VideoEntry, folder_has_videos, frame_settings, project_video_entry


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
    return DatasetEntry(image_directory=project.dataset_dir, **dataset_settings(project))


def dataset_sources(project: Project) -> DatasetSources:
    """The project's dataset folders and settings (raises WanloraError on a bad dataset.toml)."""
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


def longest_clip_frames(project: Project) -> int:
    """The longest clip in frames the project's video datasets may give (1: images only), for
    memory planning. Raises WanloraError on a bad dataset.toml."""
    return max((video.frames.longest for video in dataset_sources(project).videos), default=1)


def project_dataset_toml_text(project: Project) -> str:
    """The dataset.toml musubi-tuner needs to train `project` (absolute paths, recipe layout).

    Entries without a cache_directory get <project>/cache/musubi (video entries a subfolder
    each, so that no image dataset reads their cache files), kept apart from ours.
    """
    sources = dataset_sources(project)
    header = (
        f"musubi-tuner dataset config for {project.config.project.name}, written by wanlora\n"
        f"from {sources.dataset_toml or project.config_file}"
    )
    cache = project.cache_dir / "musubi"
    videos = [
        replace(v, cache_directory=v.cache_directory or cache / f"video_{i}")
        for i, v in enumerate(sources.videos)
    ]
    return dataset_toml_text(sources.entries, cache, header=header, videos=videos)
