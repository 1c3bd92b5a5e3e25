"""`wanlora check` for video datasets: one row per video, one line per problem. Reads only.

Errors (training would fail, or a video would give nothing): a dataset that cannot be
listed or holds no videos; an unreadable or corrupt file, a file without a video stream;
a video that gives no clip (fewer frames than every target_frames); an unknown or variable
frame rate with source_fps unset (the clip timing would be unknown); a video upscaled more
than UPSCALE_ERROR into its bucket, or one that does not fill it; a missing, unreadable or
empty caption; no clips in a project with video datasets; an I2V task without videos.

Warnings: a target_frames value longer than a video (no clip of that length from it); a
video whose rate differs from source_fps, or from the model's rate with source_fps unset
(its motion trains faster or slower than it was filmed); source_fps with a variable rate;
upscaling past UPSCALE_WARN; captions over 512 tokens or without the trigger phrase;
enable_bucket off or bucket_no_upscale on for videos (musubi-tuner buckets videos as if
both were at their defaults, and so does wanlora); video names with a mixed-case
extension (.Mp4), which the reference's file search skips.

The report's rows carry each video's clip count and lengths; `largest_bucket` gives the
longest sequence the DiT will see (images and clips), for memory planning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ...errors import WanloraError
from ...recipes.project import Project
from ..buckets import UPSCALE_ERROR, bucket_fit
from ..clips import converted_frames, latent_tokens, target_fps_for_task, video_clips
from ..items import video_bucket
from ..tokens import TokenCounter
from ..video import VideoInfo, is_mixed_case_video_name, probe_video
from ..video_sources import VideoEntry, VideoSource, list_video_sources
from .caption_text import caption_text_findings

RATE_TOLERANCE = 0.02  # a rate within 2% of another is the same rate (29.97 vs 30)
CONSTANT_RATE_FIX = "re-encode it at a constant rate, e.g. `ffmpeg -i IN -vf fps=30 OUT.mp4`"


class Report(Protocol):
    """What the checks write to (lint.CheckReport)."""

    def error(self, path: Path | str, message: str, image=None) -> None: ...

    def warn(self, path: Path | str, message: str, image=None) -> None: ...


@dataclass
class VideoReport:
    path: str
    frame_count: int | None = None
    fps: float | None = None
    variable_fps: bool = False
    width: int | None = None
    height: int | None = None
    bucket: list[int] | None = None
    clips: int = 0
    clip_frames: list[int] = field(default_factory=list)  # its clips' lengths, distinct
    caption_tokens: int | None = None
    caption_chars: int | None = None
    num_repeats: int = 1
    findings: list[str] = field(default_factory=list)


def check_videos(
    entries: Iterable[VideoEntry],
    project: Project,
    counter: TokenCounter,
    report: Report,
) -> list[VideoReport]:
    """Lint every video dataset of `project`; findings go to `report`, rows are returned."""
    entries = list(entries)
    target_fps = target_fps_for_task(project.config.task)
    trigger = project.config.project.trigger
    rows: list[VideoReport] = []
    for entry in entries:
        rows += check_video_entry(entry, target_fps, counter, trigger, report)
    if entries and not any(row.clips for row in rows):
        where = entries[0].location
        report.error(
            where,
            "the video datasets give no clips -- fix the errors above, or lower target_frames "
            "(`wanlora inspect clips` lists what each video gives)",
        )
    return rows


def check_video_entry(
    entry: VideoEntry,
    target_fps: float,
    counter: TokenCounter,
    trigger: str | None,
    report: Report,
) -> list[VideoReport]:
    try:
        videos = list_video_sources(entry)
    except WanloraError as exc:
        report.error(entry.location, exc.one_line())
        return []
    if not videos:
        report.error(
            entry.location,
            "no videos (mp4, webm, avi, mkv, mov, ...) -- put the training videos here, "
            "each with a same-name caption",
        )
    if entry.video_directory is not None:
        for path in sorted(entry.video_directory.iterdir()):
            if is_mixed_case_video_name(path):
                report.warn(
                    path,
                    f"the trainer does not read {path.suffix} files (only lower or upper case, "
                    f"e.g. {path.suffix.lower()}) -- rename it",
                )
    if not entry.enable_bucket or entry.bucket_no_upscale:
        report.warn(
            entry.location,
            "enable_bucket = false / bucket_no_upscale = true do not apply to videos: "
            "musubi-tuner buckets video frames with the defaults, and so does wanlora",
        )
    rows = []
    for video in videos:
        row = VideoReport(path=str(video.path), num_repeats=entry.num_repeats)
        rows.append(row)
        info = _check_file(video, row, report)
        if info is not None:
            _check_clips(video.path, info, entry, target_fps, row, report)
        _check_caption(video, counter, trigger, row, report)
    return rows


def _check_file(video: VideoSource, row: VideoReport, report: Report) -> VideoInfo | None:
    try:
        info = probe_video(video.path)
    except WanloraError as exc:
        report.error(video.path, exc.what + (f" -- {exc.fix}" if exc.fix else ""), row)
        return None
    row.frame_count, row.fps, row.variable_fps = info.frame_count, info.fps, info.variable_fps
    row.width, row.height = info.size
    return info


def _check_clips(
    path: Path,
    info: VideoInfo,
    entry: VideoEntry,
    target_fps: float,
    row: VideoReport,
    report: Report,
) -> None:
    settings = entry.frames
    _rate_findings(path, info, settings.source_fps, target_fps, row, report)
    bucket = video_bucket(info.size, entry)
    row.bucket = list(bucket)
    _bucket_findings(path, info.size, bucket, row, report)
    clips = video_clips(path, info.frame_count, settings, target_fps)
    row.clips = len(clips)
    row.clip_frames = sorted({clip.frame_count for clip in clips})
    if settings.extraction == "full":
        return
    frames = len(converted_frames(info.frame_count, settings.source_fps, target_fps))
    counted = f"{frames} frames" + (f" at {target_fps:g} fps" if settings.source_fps else "")
    if not clips:
        report.error(
            path,
            f"gives no clip: its {counted} are fewer than every target_frames "
            f"{list(settings.targets)} -- lower target_frames or remove the video",
            row,
        )
        return
    longer = [n for n in settings.targets if n > frames]
    if longer:
        report.warn(
            path,
            f"no {', '.join(map(str, longer))}-frame clip: the video has only {counted}",
            row,
        )


def _rate_findings(
    path: Path,
    info: VideoInfo,
    source_fps: float | None,
    target_fps: float,
    row: VideoReport,
    report: Report,
) -> None:
    if info.is_folder:
        return  # a folder of frames has no rate of its own: source_fps says what it is
    if source_fps is None:
        if info.fps is None or info.variable_fps:
            what = "is unknown" if info.fps is None else f"is variable (about {info.fps:.3g} fps)"
            report.error(
                path,
                f"its frame rate {what} and source_fps is unset, so the clips' timing is "
                f"unknown -- {CONSTANT_RATE_FIX}, and set source_fps",
                row,
            )
        elif not _same_rate(info.fps, target_fps):
            report.warn(
                path,
                f"{info.fps:.4g} fps video trained frame by frame (source_fps unset): its motion "
                f"plays {_speed(info.fps, target_fps)} at the model's {target_fps:g} fps -- "
                f"set source_fps = {float(round(info.fps, 3))!r} to drop frames to {target_fps:g} fps",
                row,
            )
        return
    if info.variable_fps:
        report.warn(
            path,
            f"variable frame rate: source_fps = {source_fps:g} drops frames as if it were "
            f"constant -- {CONSTANT_RATE_FIX}",
            row,
        )
    elif info.fps is not None and not _same_rate(info.fps, source_fps):
        report.warn(
            path,
            f"the video is {info.fps:.4g} fps but source_fps = {source_fps:g}: its motion "
            f"trains {_speed(info.fps, source_fps)} -- put videos of "
            "other rates in their own [[datasets]] entry with their own source_fps",
            row,
        )


def _same_rate(a: float, b: float) -> bool:
    return abs(a - b) <= RATE_TOLERANCE * b


def _speed(frames_rate: float, played_rate: float) -> str:
    """How motion filmed at `frames_rate` looks when played at `played_rate`."""
    ratio = frames_rate / played_rate
    return f"{ratio:.2g}x slower" if ratio > 1 else f"{1 / ratio:.2g}x faster"


def _bucket_findings(
    path: Path, size: tuple[int, int], bucket: tuple[int, int], row: VideoReport, report: Report
) -> None:
    width, height = size
    fit, scale = bucket_fit(size, bucket)
    if fit == "unfilled":  # the reference only crops here (as for images)
        report.error(
            path,
            f"{width}x{height} frames do not fill their {bucket[0]}x{bucket[1]} bucket (the "
            "reference trainer only crops when one side matches) -- re-encode the video at "
            "the resolution's aspect ratio or use another resolution",
            row,
        )
    elif fit == "upscale_error":
        report.error(
            path,
            f"{width}x{height} is too small: its frames would be upscaled {scale:.1f}x into "
            f"their {bucket[0]}x{bucket[1]} bucket (limit {UPSCALE_ERROR:g}x) -- use a "
            "higher-resolution video or a lower resolution",
            row,
        )
    elif fit == "upscale_warn":
        report.warn(
            path,
            f"{width}x{height} is upscaled {scale:.1f}x into its {bucket[0]}x{bucket[1]} "
            "bucket (soft details) -- a higher-resolution video trains sharper",
            row,
        )


def _check_caption(
    video: VideoSource, counter: TokenCounter, trigger: str | None, row: VideoReport, report: Report
) -> None:
    where = video.caption_path or video.path
    try:
        caption = video.read_caption()
    except WanloraError as exc:
        missing = video.caption_path is not None and not video.caption_path.exists()
        message = (
            f"no caption file {video.caption_path.name} -- write one next to the video"
            if missing
            else exc.what + (f" -- {exc.fix}" if exc.fix else "")
        )
        report.error(video.path if missing else where, message, row)
        return
    row.caption_chars = len(caption)
    if not caption.strip():
        report.error(where, "caption is empty -- describe the video in it", row)
        return
    tokens = counter.count(caption)
    row.caption_tokens = tokens
    caption_text_findings(caption, tokens, counter, trigger, where, row, report)


def check_task_needs_videos(
    task: str, videos: list[VideoReport], where: Path, report: Report
) -> None:
    """I2V learns motion after a given first frame: it needs clips longer than one frame."""
    if not task.startswith("i2v"):
        return
    if not any(n > 1 for row in videos for n in row.clip_frames):
        report.error(
            where,
            f"the {task} task trains motion after the first frame, but the dataset has no "
            "video clips longer than 1 frame -- add videos and set target_frames (e.g. [81])",
        )


def largest_bucket(
    image_buckets: Iterable[list[int] | None], videos: Iterable[VideoReport], task: str
) -> tuple[list[int] | None, int | None]:
    """The (W, H, frames) bucket with the longest DiT sequence, and that sequence's tokens."""
    shapes = [(b[0], b[1], 1) for b in image_buckets if b]
    shapes += [(v.bucket[0], v.bucket[1], n) for v in videos if v.bucket for n in v.clip_frames]
    if not shapes:
        return None, None
    best = max(shapes, key=lambda s: latent_tokens(*s, task=task))
    return list(best), latent_tokens(*best, task=task)
