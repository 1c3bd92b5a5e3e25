"""Where a project's videos come from: video folders and JSONL lists, with their frame settings.

As in musubi-tuner, a video dataset is a `[[datasets]]` entry of a dataset.toml with
`video_directory` (the video files directly in it, each captioned by its same-name caption
file) or `video_jsonl_file` (one JSON object per line, `{"video_path": ..., "caption": ...}`;
a path may name a folder of images, a video given as frames). Its frame keys
(target_frames, frame_extraction, frame_stride, frame_sample, max_frames, source_fps) sit
in the entry itself; musubi-tuner accepts them nowhere else. Keys an entry leaves out take
the project's wanlora.toml `[dataset]` values, then musubi-tuner's defaults.

Without a dataset.toml, videos in the project's `dataset.directory` folder are a video
dataset with the `[dataset]` settings, next to the folder's images.

Differences from musubi-tuner, on purpose: relative paths in a JSONL file are resolved
against the JSONL file's folder (musubi uses the working directory); `export musubi` writes
absolute ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WanloraError
from ..recipes.project import Project
from ..recipes.schema import DatasetSettings
from .captions import read_caption
from .clips import FrameSettings
from .discovery import caption_path
from .entry import dataset_settings
from .video import find_videos

if TYPE_CHECKING:
    from .entry import DatasetEntry

FRAME_KEYS = (
    "target_frames",
    "frame_extraction",
    "frame_stride",
    "frame_sample",
    "max_frames",
    "source_fps",
)
VIDEO_LOCATION_KEYS = ("video_directory", "video_jsonl_file")
FRAME_KEY_REASON = "a video key: musubi-tuner reads it only in a video [[datasets]] entry"
IGNORED_VIDEO_KEYS = {
    "cache_directory": "wanlora caches under the project's cache/ folder",
    "control_directory": "control videos are not supported",
}


@dataclass(frozen=True)
class VideoEntry:
    """One video dataset (a folder or a JSONL list) and the settings its clips are cut with."""

    video_directory: Path | None = None
    video_jsonl_file: Path | None = None
    caption_extension: str = ".txt"
    resolution: tuple[int, int] = (960, 960)
    batch_size: int = 1
    enable_bucket: bool = True
    bucket_no_upscale: bool = False
    num_repeats: int = 1
    reso_step: int = 16  # bucket sides' step: the task's (32 for TI2V-5B), not a musubi key
    cache_directory: Path | None = None  # kept for writing musubi files back; we cache elsewhere
    frames: FrameSettings = field(default_factory=FrameSettings)
    source: str = "wanlora.toml [dataset]"  # where these settings came from, for messages

    @property
    def location(self) -> Path:
        """The folder or JSONL file the videos are listed in."""
        return self.video_directory or self.video_jsonl_file  # type: ignore[return-value]


def frame_settings(settings: DatasetSettings) -> FrameSettings:
    """The frame settings of a wanlora.toml `[dataset]` table."""
    return FrameSettings(
        target_frames=tuple(settings.target_frames),
        frame_extraction=settings.frame_extraction,
        frame_stride=settings.frame_stride,
        frame_sample=settings.frame_sample,
        max_frames=settings.max_frames,
        source_fps=settings.source_fps,
    )


def project_video_entry(project: Project) -> VideoEntry:
    """The project's `dataset.directory` as a video dataset with the `[dataset]` settings."""
    return VideoEntry(
        video_directory=project.dataset_dir,
        frames=frame_settings(project.config.dataset),
        **dataset_settings(project),
    )


def folder_has_videos(folder: Path) -> bool:
    try:
        return folder.is_dir() and bool(find_videos(folder))
    except OSError:  # an unreadable folder: the image scan reports it
        return False


def is_video_table(table: dict) -> bool:
    return any(key in table for key in VIDEO_LOCATION_KEYS)


def video_entry_from_table(
    table: dict,
    shared: DatasetEntry,
    shared_keys: tuple[str, ...],
    frames: FrameSettings,
    toml_path: Path,
    where: str,
    resolve: Callable[[str], Path],
    ignored: list[str],
) -> VideoEntry:
    """A dataset.toml `[[datasets]]` video table as an entry.

    `shared` holds the entry's `shared_keys` settings (resolution, caption_extension, ...)
    already layered by the dataset.toml reader; `frames` the defaults for keys the table leaves out;
    `resolve(key)` turns the table's path value for `key` into a checked, absolute path.
    Keys wanlora does not use are appended to `ignored`.
    """
    for key in table:
        if key not in (*shared_keys, *FRAME_KEYS, *VIDEO_LOCATION_KEYS):
            ignored.append(f"{where}.{key} ({IGNORED_VIDEO_KEYS.get(key, 'not used by wanlora')})")
    directory = resolve("video_directory") if "video_directory" in table else None
    if directory is not None and "video_jsonl_file" in table:
        ignored.append(
            f"{where}.video_jsonl_file (musubi-tuner uses video_directory when both are set)"
        )
    return VideoEntry(
        video_directory=directory,
        video_jsonl_file=resolve("video_jsonl_file") if directory is None else None,
        caption_extension=shared.caption_extension,
        resolution=tuple(shared.resolution),
        batch_size=shared.batch_size,
        enable_bucket=shared.enable_bucket,
        bucket_no_upscale=shared.bucket_no_upscale,
        num_repeats=shared.num_repeats,
        reso_step=shared.reso_step,
        cache_directory=resolve("cache_directory") if "cache_directory" in table else None,
        frames=_frame_keys(table, frames, f"{toml_path}: {where}"),
        source=f"{toml_path} {where}",
    )


def _frame_keys(table: dict, defaults: FrameSettings, where: str) -> FrameSettings:
    changes: dict[str, Any] = {}
    for key in FRAME_KEYS:
        if key not in table:
            continue
        value = table[key]
        bad = f"{where}.{key} = {value!r}"
        if key == "target_frames":
            if not isinstance(value, list) or not all(_is_int(v) for v in value):
                raise WanloraError(
                    f"{bad} is not a list of frame counts", "write e.g. target_frames = [1, 25, 45]"
                )
            value = tuple(value)
        elif key == "frame_extraction":
            if not isinstance(value, str):
                raise WanloraError(
                    f"{bad} is not a mode name", 'write e.g. frame_extraction = "head"'
                )
        elif key == "source_fps":
            if not isinstance(value, float):
                # musubi-tuner's schema takes only a float here: 30 is rejected, 30.0 is not
                example = float(value) if _is_int(value) else 30.0
                raise WanloraError(f"{bad} is not a decimal number", f"write {key} = {example!r}")
        elif not _is_int(value):
            raise WanloraError(f"{bad} is not a whole number", f"write e.g. {key} = 1")
        changes[key] = value
    frames = replace(defaults, **changes)
    problems = frames.validate()
    if problems:
        raise WanloraError(f"{where}: {problems[0]}", "fix that key in the dataset.toml")
    return frames


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def video_location_keys(entry: VideoEntry) -> dict[str, str]:
    """The entry's video_directory or video_jsonl_file, as written to a dataset.toml."""
    if entry.video_directory is not None:
        return {"video_directory": Path(entry.video_directory).as_posix()}
    return {"video_jsonl_file": Path(entry.video_jsonl_file).as_posix()}  # type: ignore[arg-type]


def video_toml_keys(entry: VideoEntry) -> dict[str, Any]:
    """The frame keys whose values differ from musubi-tuner's defaults, in musubi's types
    (target_frames as given: musubi rounds them itself; source_fps always a float)."""
    keys: dict[str, Any] = {}
    defaults = FrameSettings()
    for key in FRAME_KEYS:
        value = getattr(entry.frames, key)
        if value != getattr(defaults, key):
            keys[key] = list(value) if key == "target_frames" else value
    if "source_fps" in keys:
        keys["source_fps"] = float(keys["source_fps"])
    return keys


@dataclass(frozen=True)
class VideoSource:
    """One video of a dataset: a file or a folder of frames, and where its caption comes from."""

    path: Path
    caption_path: Path | None = None  # video folders: the same-name caption file
    caption: str | None = None  # JSONL lists: the caption written in the line

    def read_caption(self) -> str:
        """The caption text; WanloraError when the caption file is missing or unreadable."""
        if self.caption is not None:
            return self.caption
        return read_caption(self.caption_path)  # type: ignore[arg-type]


def list_video_sources(entry: VideoEntry) -> list[VideoSource]:
    """The videos of `entry` in the reference's order (folder: sorted by path; JSONL: as listed)."""
    if entry.video_directory is not None:
        folder = entry.video_directory
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is not a folder"
            raise WanloraError(
                f"{folder}: video folder {what} (from {entry.source})",
                "create it and put the videos and their captions in it, or fix the path",
            )
        return [
            VideoSource(path, caption_path=caption_path(path, entry.caption_extension))
            for path in find_videos(folder)
        ]
    return read_video_jsonl(entry.video_jsonl_file)  # type: ignore[arg-type]


def read_video_jsonl(path: Path) -> list[VideoSource]:
    """The videos of a musubi-tuner video JSONL file; WanloraError naming the line if bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WanloraError(f"{path}: video list not found", "fix video_jsonl_file") from None
    except UnicodeDecodeError:
        raise WanloraError(f"{path}: not UTF-8 text", "save the file as UTF-8") from None
    except OSError as exc:
        raise WanloraError(
            f"{path}: cannot read ({exc.strerror or exc})", "check the file"
        ) from None
    sources = []
    example = '{"video_path": "clips/walk.mp4", "caption": "a person walking"}'
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}: line {number}"
        if not line.strip():
            raise WanloraError(f"{where} is empty (musubi-tuner fails on it)", "remove the line")
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WanloraError(
                f"{where} is not JSON ({exc.msg})", f"write it as {example}"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("video_path"), str):
            raise WanloraError(f'{where} has no "video_path" string', f"write it as {example}")
        if not isinstance(data.get("caption"), str):
            raise WanloraError(f'{where} has no "caption" string', f"write it as {example}")
        video = Path(data["video_path"]).expanduser()
        sources.append(
            VideoSource(
                video if video.is_absolute() else path.parent / video, caption=data["caption"]
            )
        )
    return sources
