"""What `wanlora check` finds: one `Finding` per problem, one `ImageReport` row per image,
and the `CheckReport` that holds both (printed as a table, or written as JSON).

`CheckedImage` is what a per-image rule hands on to the dataset-wide rules (duplicates,
caption mix-ups): the row, the file, its caption text and its perceptual hash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash

from .videos import VideoReport

MAX_NAMES_LISTED = 5


@dataclass
class Finding:
    path: str
    message: str
    image: str | None = None  # the image row this finding belongs to, if any


@dataclass
class ImageReport:
    path: str
    width: int | None
    height: int | None
    bucket: list[int] | None
    mode: str | None = None
    caption_tokens: int | None = None
    caption_chars: int | None = None
    num_repeats: int = 1
    findings: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    images: list[ImageReport] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    token_count_source: str = ""
    tokens_are_estimate: bool = True
    videos: list[VideoReport] = field(default_factory=list)  # lint/videos.py
    largest_bucket: list[int] | None = None  # (W, H, frames) with the longest DiT sequence
    largest_bucket_tokens: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, path: Path | str, message: str, image: ImageReport | None = None) -> None:
        self.errors.append(Finding(str(path), message, image.path if image else None))
        if image is not None:
            image.findings.append(f"error: {message}")

    def warn(self, path: Path | str, message: str, image: ImageReport | None = None) -> None:
        self.warnings.append(Finding(str(path), message, image.path if image else None))
        if image is not None:
            image.findings.append(f"warning: {message}")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


@dataclass
class CheckedImage:
    """What the dataset-wide checks need of one image."""

    report: ImageReport
    path: Path
    caption: str | None
    phash: imagehash.ImageHash | None


def name_list(paths: list[Path]) -> str:
    """File names for a message: the first few, then how many more."""
    shown = ", ".join(p.name for p in paths[:MAX_NAMES_LISTED])
    more = len(paths) - MAX_NAMES_LISTED
    return shown + (f" and {more} more" if more > 0 else "")
