"""Which files of a dataset folder are training images, as the reference trainer sees them.

Files directly in the folder (not recursive, hidden files skipped like the reference's glob)
whose extension is png, jpg, jpeg, webp or bmp
in either case, sorted by path; a caption is the file with the image's stem plus the
caption extension.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_images(directory: str | Path) -> list[Path]:
    """Image files directly in `directory`, sorted by path (directories named like images skipped)."""
    directory = Path(directory)
    return sorted(
        p
        for p in directory.iterdir()
        if is_image_name(p) and not p.name.startswith(".") and p.is_file()
    )


def caption_path(image: Path, caption_extension: str = ".txt") -> Path:
    return image.with_name(image.stem + caption_extension)
