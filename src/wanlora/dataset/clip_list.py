"""Every clip a project will train on, video by video: what `wanlora inspect clips` prints.

For each video of each video dataset: its frame count and rate, the frames left after the
frame-rate conversion, the bucket of its first frame, and each clip (item name, start,
length, the source frames it spans). A video that cannot be read is listed with its error
instead of stopping the listing, so the settings can be checked before the videos are fixed.
Captions are not read here (`wanlora check` does that).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..errors import WanloraError
from ..recipes.project import Project
from .clips import converted_frames, target_fps_for_task, video_clips
from .items import video_bucket
from .sources import dataset_sources
from .video import probe_video
from .video_sources import VideoEntry, VideoSource, list_video_sources


@dataclass
class ClipRow:
    name: str  # the training item's name
    source: str  # the video file or frame folder
    start: int  # in frames after the frame-rate conversion
    frames: int
    bucket: list[int]  # (W, H), every frame is resized into it
    source_frames: list[int]  # first and last frame of the source it spans


@dataclass
class VideoClips:
    source: str
    dataset: str  # where its settings come from
    frame_extraction: str
    source_fps: float | None
    frame_count: int | None = None
    fps: float | None = None
    variable_fps: bool = False
    used_frames: int | None = None  # after the frame-rate conversion and head's read limit
    size: list[int] | None = None  # first frame, (width, height)
    bucket: list[int] | None = None
    clips: list[ClipRow] = field(default_factory=list)
    error: str | None = None


@dataclass
class ClipList:
    target_fps: float
    videos: list[VideoClips] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # datasets that could not be listed

    @property
    def clip_count(self) -> int:
        return sum(len(v.clips) for v in self.videos)

    def to_json(self) -> str:
        data = {"target_fps": self.target_fps, "clip_count": self.clip_count, **asdict(self)}
        return json.dumps(data, indent=2, ensure_ascii=False)


def video_clip_list(video: VideoSource, entry: VideoEntry, target_fps: float) -> VideoClips:
    """One video's clips under `entry`'s settings (its read error, if any, in `error`)."""
    settings = entry.frames
    row = VideoClips(str(video.path), entry.source, settings.extraction, settings.source_fps)
    try:
        info = probe_video(video.path)
    except WanloraError as exc:
        row.error = exc.one_line()
        return row
    row.frame_count, row.fps, row.variable_fps = info.frame_count, info.fps, info.variable_fps
    row.used_frames = len(
        converted_frames(info.frame_count, settings.source_fps, target_fps, settings.read_limit)
    )
    row.size = list(info.size)
    bucket = video_bucket(info.size, entry)
    row.bucket = list(bucket)
    for clip in video_clips(video.path, info.frame_count, settings, target_fps):
        span = [clip.frame_indices[0], clip.frame_indices[-1]]
        row.clips.append(
            ClipRow(clip.name, row.source, clip.start, clip.frame_count, row.bucket, span)
        )
    return row


def project_clip_list(project: Project) -> ClipList:
    """Every video clip of `project`; dataset problems are collected, not raised."""
    listing = ClipList(target_fps=target_fps_for_task(project.config.task))
    try:
        entries = dataset_sources(project).videos
    except WanloraError as exc:
        listing.errors.append(exc.one_line())
        return listing
    for entry in entries:
        try:
            videos = list_video_sources(entry)
        except WanloraError as exc:
            listing.errors.append(exc.one_line())
            continue
        listing.videos += [video_clip_list(v, entry, listing.target_fps) for v in videos]
    return listing
