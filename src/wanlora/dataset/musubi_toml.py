"""musubi-tuner's dataset.toml: read the recipe's file unchanged, and write one for a project.

Layering, as in musubi-tuner: `[general]` values are defaults that each `[[datasets]]` entry
may override. Keys absent from both take the project's wanlora.toml `[dataset]` values (the
recipe's). Relative paths are resolved against the folder holding the dataset.toml (musubi
itself resolves them against the working directory, which is fragile); `~` is expanded;
absolute paths are used as written.

Keys wanlora does not use (`cache_directory`: we cache under the project's cache/ folder;
control keys; video keys outside a video entry; anything unknown) are reported in
`ignored_keys`, never silently dropped. Entries with `video_directory` or
`video_jsonl_file` are video datasets (see `video_sources`); image folders need
`image_directory` (image JSONL lists are not supported).

This module knows files and `DatasetEntry` only, not projects: `sources` turns a project
into entries through it (the import points one way, sources -> musubi_toml).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import WanloraError
from ..fsutil import atomic_write_text
from .clips import FrameSettings
from .entry import DatasetEntry
from .video_sources import (
    FRAME_KEY_REASON,
    FRAME_KEYS,
    VideoEntry,
    is_video_table,
    video_entry_from_table,
    video_location_keys,
    video_toml_keys,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Settings that may sit in [general] or in a [[datasets]] entry.
SHARED_KEYS = (
    "resolution",
    "caption_extension",
    "batch_size",
    "enable_bucket",
    "bucket_no_upscale",
    "num_repeats",
)
DATASET_KEYS = ("image_directory", "cache_directory")
IGNORED_REASONS = {
    "cache_directory": "wanlora caches under the project's cache/ folder",
    **dict.fromkeys(FRAME_KEYS, FRAME_KEY_REASON),
}


@dataclass(frozen=True)
class DatasetToml:
    """A parsed dataset.toml: its image and video datasets and the keys wanlora ignores."""

    path: Path
    datasets: list[DatasetEntry]
    ignored_keys: list[str]
    videos: list[VideoEntry] = field(default_factory=list)


def read_dataset_toml(
    path: str | Path,
    defaults: DatasetEntry | None = None,
    video_defaults: FrameSettings | None = None,
) -> DatasetToml:
    """Parse a musubi-tuner dataset.toml; raise WanloraError naming the file and key on bad input."""
    path = Path(path)
    data = _load_toml(path)
    defaults = defaults or DatasetEntry(image_directory=path.parent)
    ignored: list[str] = []

    for key in data:
        if key not in ("general", "datasets"):
            ignored.append(_ignored(key, key))
    general = data.get("general", {})
    if not isinstance(general, dict):
        raise WanloraError(f"{path}: `general` must be a table", "write it as [general]")
    for key in general:
        if key not in SHARED_KEYS:
            ignored.append(_ignored(f"general.{key}", key))
    base = _apply_shared(defaults, general, path, "general")

    datasets = data.get("datasets")
    if (
        not isinstance(datasets, list)
        or not datasets
        or not all(isinstance(d, dict) for d in datasets)
    ):
        raise WanloraError(
            f"{path}: no [[datasets]] entries",
            'add a [[datasets]] table with image_directory = "path/to/images"',
        )
    entries, videos = [], []
    frames = video_defaults or FrameSettings()
    for index, table in enumerate(datasets):
        where = f"datasets[{index}]"
        if "image_directory" not in table and is_video_table(table):
            videos.append(
                video_entry_from_table(
                    table,
                    _apply_shared(base, table, path, where),
                    SHARED_KEYS,
                    frames,
                    path,
                    where,
                    lambda key, table=table, where=where: _path_value(table, key, path, where),
                    ignored,
                )
            )
            continue
        if "image_directory" not in table:
            raise WanloraError(
                f"{path}: {where} has no image_directory, video_directory or video_jsonl_file",
                'name its folder: image_directory = "path/to/images" or '
                'video_directory = "path/to/videos"',
            )
        for key in table:
            if key not in SHARED_KEYS and key != "image_directory":
                ignored.append(_ignored(f"{where}.{key}", key))
        entry = _apply_shared(base, table, path, where)
        image_directory = _path_value(table, "image_directory", path, where)
        cache_directory = (
            _path_value(table, "cache_directory", path, where)
            if "cache_directory" in table
            else None
        )
        entries.append(
            replace(
                entry,
                image_directory=image_directory,
                cache_directory=cache_directory,
                source=f"{path} {where}",
            )
        )
    return DatasetToml(path=path, datasets=entries, ignored_keys=ignored, videos=videos)


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WanloraError(
            f"{path}: dataset.toml not found", "fix dataset.dataset_toml in wanlora.toml"
        ) from None
    except IsADirectoryError:
        raise WanloraError(f"{path}: is a folder, not a dataset.toml", "name the file") from None
    except UnicodeDecodeError:
        raise WanloraError(f"{path}: not UTF-8 text", "save the file as UTF-8") from None
    except OSError as exc:
        raise WanloraError(f"{path}: cannot read ({exc.strerror})", "check the file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WanloraError(f"{path}: invalid TOML ({exc})", "fix the syntax at that line") from None


def _ignored(key: str, name: str) -> str:
    reason = IGNORED_REASONS.get(name, "not used by wanlora")
    return f"{key} ({reason})"


def _apply_shared(entry: DatasetEntry, table: dict, path: Path, where: str) -> DatasetEntry:
    """`entry` with the shared settings that `table` sets, each checked."""
    changes: dict[str, Any] = {}
    for key in SHARED_KEYS:
        if key not in table:
            continue
        value = table[key]
        bad = f"{path}: {where}.{key} = {value!r}"
        if key == "resolution":
            changes[key] = _resolution(value, bad)
        elif key == "caption_extension":
            if not isinstance(value, str) or not value:
                raise WanloraError(f"{bad} is not a file extension", 'write e.g. ".txt"')
            changes[key] = value
        elif key in ("enable_bucket", "bucket_no_upscale"):
            if not isinstance(value, bool):
                raise WanloraError(f"{bad} is not true/false", f"write {key} = true or false")
            changes[key] = value
        else:  # batch_size, num_repeats
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WanloraError(f"{bad} is not a positive integer", f"write e.g. {key} = 1")
            changes[key] = value
    return replace(entry, **changes)


def _resolution(value: Any, bad: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise WanloraError(f"{bad} is not [width, height]", "write e.g. resolution = [960, 960]")
    if any(side < 16 or side % 16 for side in value):
        raise WanloraError(
            f"{bad}: each side must be a positive multiple of 16", "e.g. resolution = [960, 960]"
        )
    return (value[0], value[1])


def _path_value(table: dict, key: str, path: Path, where: str) -> Path:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise WanloraError(
            f"{path}: {where}.{key} = {value!r} is not a path", f'write {key} = "..."'
        )
    folder = Path(os.path.expanduser(value))
    if not folder.is_absolute():
        folder = path.parent / folder
    return Path(os.path.normpath(folder))


def dataset_toml_text(
    entries: list[DatasetEntry],
    cache_directory: str | Path | None = None,
    header: str = "",
    videos: Sequence[VideoEntry] = (),
) -> str:
    """A musubi-tuner dataset.toml for `entries` (then `videos`), laid out like the recipe's file.

    [general] holds the first entry's settings; an entry repeats only the settings where it
    differs. Paths are written absolute. `cache_directory` is used for entries without one.
    Video entries carry their frame keys (see `video_sources.video_toml_keys`).
    """
    if not entries and not videos:
        raise ValueError("dataset_toml_text needs at least one dataset entry")
    first = entries[0] if entries else videos[0]
    general = {key: _toml_value(getattr(first, key)) for key in SHARED_KEYS if key != "num_repeats"}
    tables = []
    for entry in [*entries, *videos]:
        table: dict[str, Any] = (
            {"image_directory": Path(entry.image_directory).as_posix()}
            if isinstance(entry, DatasetEntry)
            else video_location_keys(entry)
        )
        cache = entry.cache_directory or cache_directory
        if cache is not None:
            table["cache_directory"] = Path(cache).as_posix()
        table["num_repeats"] = entry.num_repeats
        for key in SHARED_KEYS:
            if key != "num_repeats" and getattr(entry, key) != getattr(first, key):
                table[key] = _toml_value(getattr(entry, key))
        if isinstance(entry, VideoEntry):
            table.update(video_toml_keys(entry))
        tables.append(table)
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines.append("[general]")
    lines += [f"{key} = {_toml_scalar(value)}" for key, value in general.items()]
    for table in tables:
        lines += ["", "[[datasets]]"]
        lines += [f"{key} = {_toml_scalar(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _toml_scalar(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[4:].strip()


def write_dataset_toml(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write a dataset.toml atomically; refuse to replace an existing file unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise WanloraError(f"{path}: already exists", "remove it or pass --force to replace it")
    atomic_write_text(path, text)
    return path
