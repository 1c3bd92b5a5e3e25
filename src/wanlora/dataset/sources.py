"""Where a project's images come from: one or more dataset folders with their settings.

A project reads either its `dataset.directory` folder with the `[dataset]` settings of
wanlora.toml, or a musubi-tuner dataset.toml named by `dataset.dataset_toml` (see
`musubi_toml`). Either way the result is a list of `DatasetEntry` (`entry`).

Imports go one way: this module reads and writes dataset.toml files through `musubi_toml`,
which knows only `entry` and never imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..recipes.project import Project
from .entry import DatasetEntry
from .musubi_toml import dataset_toml_text, read_dataset_toml


@dataclass(frozen=True)
class DatasetSources:
    entries: list[DatasetEntry]
    ignored_keys: list[str] = field(default_factory=list)
    dataset_toml: Path | None = None


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
    toml_path = dataset_toml_path(project)
    if toml_path is None:
        return DatasetSources(entries=[project_entry(project)])
    parsed = read_dataset_toml(toml_path, defaults=project_entry(project))
    return DatasetSources(
        entries=parsed.datasets, ignored_keys=parsed.ignored_keys, dataset_toml=toml_path
    )


def project_dataset_toml_text(project: Project) -> str:
    """The dataset.toml musubi-tuner needs to train `project` (absolute paths, recipe layout).

    Entries without a cache_directory get <project>/cache/musubi, kept apart from ours.
    """
    sources = dataset_sources(project)
    header = (
        f"musubi-tuner dataset config for {project.config.project.name}, written by wanlora\n"
        f"from {sources.dataset_toml or project.config_file}"
    )
    return dataset_toml_text(sources.entries, project.cache_dir / "musubi", header=header)
