"""What is in one dataset folder: images, their captions, and the leftovers around them."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WanloraError
from .discovery import caption_path, find_images, is_image_name
from .video import is_video_name

# Image formats people drop into a dataset that the reference trainer does not read.
UNREAD_IMAGE_EXTENSIONS = (".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jfif")


@dataclass
class FolderScan:
    directory: Path
    images: list[Path]
    captions: dict[Path, Path]  # image -> its caption file (which may be missing)
    missing_captions: list[Path] = field(default_factory=list)  # images without caption file
    orphan_captions: list[Path] = field(default_factory=list)  # caption files without image
    shared_captions: dict[Path, list[Path]] = field(default_factory=dict)  # caption -> images
    not_files: list[Path] = field(default_factory=list)  # image-named folders, broken links
    unread_images: list[Path] = field(default_factory=list)  # .gif, .tiff, ... (not trained)


def check_directory(directory: Path, source: str) -> None:
    if not directory.exists():
        raise WanloraError(
            f"{directory}: dataset folder does not exist (from {source})",
            "create it and put the images and .txt captions in it, or fix the path",
        )
    if not directory.is_dir():
        raise WanloraError(f"{directory}: is not a folder (from {source})", "point it at a folder")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise WanloraError(f"{directory}: permission denied", "make the folder readable")


def scan_folder(directory: Path, caption_extension: str = ".txt", source: str = "") -> FolderScan:
    """List a dataset folder the way the reference trainer reads it (not recursive)."""
    directory = Path(directory)
    check_directory(directory, source or str(directory))
    images = find_images(directory)
    captions = {image: caption_path(image, caption_extension) for image in images}
    scan = FolderScan(directory=directory, images=images, captions=captions)

    by_caption: dict[Path, list[Path]] = {}
    for image, caption in captions.items():
        by_caption.setdefault(caption, []).append(image)
        if not caption.is_file():
            scan.missing_captions.append(image)
    scan.shared_captions = {c: imgs for c, imgs in by_caption.items() if len(imgs) > 1}

    image_set = set(images)
    entries = sorted(directory.iterdir())
    # captions of videos in the same folder belong to a video dataset, not orphans here
    video_captions = {caption_path(e, caption_extension) for e in entries if is_video_name(e)}
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if is_image_name(entry) and entry not in image_set:
            scan.not_files.append(entry)
        elif name.lower().endswith(UNREAD_IMAGE_EXTENSIONS):
            scan.unread_images.append(entry)
        elif (
            name.endswith(caption_extension)
            and entry not in by_caption
            and entry not in video_captions
        ):
            scan.orphan_captions.append(entry)
    return scan


def describe_not_file(path: Path) -> str:
    """Why an image-named entry is not an image file."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop this way
            return "a symlink loop"
        except OSError as exc:
            return "a symlink loop" if exc.errno == errno.ELOOP else "a broken symlink"
    if path.is_dir():
        return "a folder named like an image"
    return "not a regular file"
