"""A project's training items: every image, and every clip of every video, with its caption,
size, bucket and repeats.

An image is a 1-frame item. A video gives one item per clip (dataset/clips.py), named
`{stem}_{start:05d}-{N:03d}` like musubi-tuner's; all clips of a video share the bucket of
its first frame. musubi-tuner buckets video frames with enable_bucket on and
bucket_no_upscale off whatever the dataset says (its latent caching builds the bucket
selector with the defaults), so video clips are bucketed that way here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import WanloraError
from ..recipes.project import Project
from .buckets import select_bucket
from .captions import read_caption
from .clips import WAN_FPS, Clip, target_fps_for_task, video_clips
from .entry import DatasetEntry
from .images import image_size
from .scan import describe_not_file, scan_folder
from .sources import dataset_sources
from .video import VIDEO_EXTENSIONS, probe_video
from .video_sources import VideoEntry, list_video_sources


@dataclass(frozen=True)
class DatasetItem:
    image_path: Path  # the image, or the video (file or frame folder) a clip comes from
    caption: str
    original_size: tuple[int, int]  # (width, height) as stored, before any resize
    bucket: tuple[int, int]  # (W, H)
    num_repeats: int
    clip: Clip | None = None  # None for an image

    @property
    def frames(self) -> int:
        return 1 if self.clip is None else self.clip.frame_count

    @property
    def name(self) -> str:
        return self.image_path.stem if self.clip is None else self.clip.name

    @property
    def batch_key(self) -> tuple[int, int, int]:
        """(W, H, frames): items of one batch share it."""
        return (self.bucket[0], self.bucket[1], self.frames)


def bucket_for(size: tuple[int, int], entry: DatasetEntry) -> tuple[int, int]:
    return select_bucket(
        size[0], size[1], entry.resolution, entry.enable_bucket, entry.bucket_no_upscale,
        entry.reso_step,
    )


def load_entry_items(entry: DatasetEntry) -> list[DatasetItem]:
    """The items of one dataset folder; raises WanloraError on what stops the reference."""
    scan = scan_folder(entry.image_directory, entry.caption_extension, entry.source)
    if not scan.images:
        raise WanloraError(
            f"{entry.image_directory}: no images (png, jpg, jpeg, webp or bmp) in the dataset folder",
            "put the training images there, each with a same-name .txt caption",
        )
    if scan.not_files:
        path = scan.not_files[0]
        raise WanloraError(
            f"{path}: {describe_not_file(path)}, not an image file",
            "remove it, rename it, or fix the link",
        )
    if scan.missing_captions:
        image = scan.missing_captions[0]
        more = len(scan.missing_captions) - 1
        raise WanloraError(
            f"{image}: no caption file {scan.captions[image].name}"
            + (f" (and {more} more images without captions)" if more else ""),
            "write a same-name .txt caption for every image (or run `wanlora caption`)",
        )
    items = []
    for image in scan.images:
        caption = read_caption(scan.captions[image])
        size = image_size(image)
        bucket = bucket_for(size, entry)
        if min(bucket) < entry.reso_step:
            raise WanloraError(
                f"{image}: {size[0]}x{size[1]} is too small for a bucket with bucket_no_upscale",
                "use a larger image or set bucket_no_upscale = false",
            )
        items.append(DatasetItem(image, caption, size, bucket, entry.num_repeats))
    return items


def video_bucket(size: tuple[int, int], entry: VideoEntry) -> tuple[int, int]:
    """The bucket of a video whose first frame is `size` (always bucketed, see above)."""
    return select_bucket(size[0], size[1], entry.resolution, True, False, entry.reso_step)


def load_video_entry_items(entry: VideoEntry, target_fps: float = WAN_FPS) -> list[DatasetItem]:
    """The clips of one video dataset as items; raises WanloraError on what stops training."""
    videos = list_video_sources(entry)
    if not videos:
        raise WanloraError(
            f"{entry.location}: no videos ({', '.join(VIDEO_EXTENSIONS)}) in the video dataset",
            "put the training videos there, each with a same-name caption file",
        )
    items = []
    for video in videos:
        caption = video.read_caption()
        info = probe_video(video.path)
        bucket = video_bucket(info.size, entry)
        for clip in video_clips(video.path, info.frame_count, entry.frames, target_fps):
            items.append(
                DatasetItem(video.path, caption, info.size, bucket, entry.num_repeats, clip)
            )
    if not items:
        raise WanloraError(
            f"{entry.location}: no clips: every video is shorter than every target_frames "
            f"{list(entry.frames.targets)} (from {entry.source})",
            "lower target_frames, or see `wanlora inspect clips` for what each video gives",
        )
    return items


def load_items(project: Project) -> list[DatasetItem]:
    """Every training item of the project (folder or dataset.toml), in the reference's order:
    the image datasets' items, then the video datasets' clips."""
    sources = dataset_sources(project)
    items: list[DatasetItem] = []
    for entry in sources.entries:
        items.extend(load_entry_items(entry))
    target_fps = target_fps_for_task(project.config.task)
    for video_entry in sources.videos:
        items.extend(load_video_entry_items(video_entry, target_fps))
    return items
