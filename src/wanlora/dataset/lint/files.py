"""Rules about what a dataset folder holds, file by file, before any image is opened:
images paired with captions, leftovers the trainer skips or trips on, symlinks and folders
outside the project, and the number of images against the recipe's 18.
"""

from __future__ import annotations

from pathlib import Path

from ...recipes import Project
from ..scan import FolderScan, describe_not_file
from .report import CheckedImage, CheckReport

RECIPE_IMAGE_COUNT = 18


def folder_findings(scan: FolderScan, folder: Path, project: Project, report: CheckReport) -> None:
    """Findings about one scanned folder as a whole (not about any one image's content)."""
    if not inside(folder, project.root):
        report.warn(folder, f"dataset folder is outside the project folder {project.root}")
    if not scan.images:
        report.error(
            folder,
            "no images (png, jpg, jpeg, webp or bmp) -- put the training images here, "
            "each with a same-name caption",
        )
    for path in scan.not_files:
        what = describe_not_file(path)
        if what.startswith("a folder"):
            report.warn(
                path, f"{what}: skipped (the reference trainer would fail on it); rename it"
            )
        else:
            report.error(path, f"{what} named like an image -- remove it or fix the link")
    for path in scan.unread_images:
        report.warn(
            path,
            f"{path.suffix} files are not read by the trainer (only png, jpg, jpeg, webp, bmp)"
            " -- convert it to PNG if it belongs in the dataset",
        )
    for path in scan.orphan_captions:
        report.error(
            path,
            "caption without an image (no same-name png/jpg/jpeg/webp/bmp) -- "
            "rename it to match its image or remove it",
        )
    for caption, images in scan.shared_captions.items():
        names = ", ".join(p.name for p in images)
        report.warn(caption, f"one caption file is used by several images ({names})")


def count_findings(
    checked: list[CheckedImage], project: Project, report: CheckReport, has_videos: bool = False
) -> None:
    """No images (and no videos) is an error; an image count other than the recipe's is a
    warning (the recipe's 18 is about image datasets: a video dataset has no such count)."""
    if has_videos:
        return
    if not checked and not report.errors:
        report.error(project.dataset_dir, "no images in the dataset")
    elif checked and len(checked) != RECIPE_IMAGE_COUNT:
        report.warn(
            project.dataset_dir,
            f"{len(checked)} images; the recipe uses exactly {RECIPE_IMAGE_COUNT} "
            "(its settings are tuned for 18 images x 100 epochs)",
        )


def symlink_outside(path: Path, folder: Path) -> Path | None:
    """Where `path` points when it is a symlink leading out of `folder`, else None."""
    if path.is_symlink() and not inside(path.resolve(), folder):
        return path.resolve()
    return None


def inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
