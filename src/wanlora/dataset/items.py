"""A project's training items: every image with its caption, size, bucket and repeats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import WanloraError
from ..recipes.project import Project
from .buckets import select_bucket
from .captions import read_caption
from .entry import DatasetEntry
from .images import image_size
from .scan import describe_not_file, scan_folder
from .sources import dataset_sources


@dataclass(frozen=True)
class DatasetItem:
    image_path: Path
    caption: str
    original_size: tuple[int, int]  # (width, height) as stored, before any resize
    bucket: tuple[int, int]  # (W, H)
    num_repeats: int


def bucket_for(size: tuple[int, int], entry: DatasetEntry) -> tuple[int, int]:
    return select_bucket(
        size[0], size[1], entry.resolution, entry.enable_bucket, entry.bucket_no_upscale
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
        if min(bucket) < 16:
            raise WanloraError(
                f"{image}: {size[0]}x{size[1]} is too small for a bucket with bucket_no_upscale",
                "use a larger image or set bucket_no_upscale = false",
            )
        items.append(DatasetItem(image, caption, size, bucket, entry.num_repeats))
    return items


def load_items(project: Project) -> list[DatasetItem]:
    """Every training item of the project (folder or dataset.toml), in the reference's order."""
    items: list[DatasetItem] = []
    for entry in dataset_sources(project).entries:
        items.extend(load_entry_items(entry))
    return items
