"""The per-image loop: one request per image, so a caption can only land beside its image.

Resumable: an image that already has a caption is skipped (an empty caption file counts as
missing). An image that cannot be captioned (unreadable, refused by the server, no usable
caption after the retries) is logged, left uncaptioned and listed in `failed`; the rest go on. With `overwrite`, an existing caption is first copied to `<caption>.bak` (or
`.bak1`, `.bak2`, ... if that exists), so nothing a user wrote is lost. Every caption is
written atomically the moment it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..dataset.discovery import caption_path, find_images
from ..errors import WanloraError
from ..fsutil import atomic_write_text
from ..recipes import PROJECT_FILE, Project, load_project, refuse_dataset_folder
from .checks import CaptionRejected, check_caption
from .images import ImageProblem
from .prompt import build_prompt, load_template, resolve_style_phrase

log = logging.getLogger(__name__)

# called with (images done, images to do, the image just done or None at the start)
ProgressFn = Callable[[int, int, "Path | None"], None]


class CaptionBackend(Protocol):
    def caption(self, image_path: Path, prompt: str) -> str: ...


@dataclass
class CaptionSummary:
    written: list[Path] = field(default_factory=list)  # caption files written
    skipped: list[Path] = field(default_factory=list)  # images that already had a caption
    backups: list[Path] = field(default_factory=list)  # old captions kept by --overwrite
    warnings: list[tuple[Path, str]] = field(default_factory=list)  # (image, what)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (image, why)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class CaptionTarget:
    """Where the images are, which extension captions use, and the configured phrase."""

    dataset_dir: Path
    caption_extension: str = ".txt"
    trigger: str | None = None


def resolve_target(project_or_dir: Project | str | Path) -> CaptionTarget:
    """A project (or its folder), or a plain folder of images."""
    if isinstance(project_or_dir, Project):
        project = project_or_dir
    else:
        folder = Path(project_or_dir).expanduser()
        if not folder.is_dir():
            raise WanloraError(f"{folder}: no such folder", "pass a project or image folder")
        if not (folder / PROJECT_FILE).is_file():
            refuse_dataset_folder(folder)  # its project's trigger and extension would be lost
            return CaptionTarget(folder.resolve())
        project = load_project(folder)
    if not project.dataset_dir.is_dir():
        raise WanloraError(
            f"{project.dataset_dir}: dataset folder missing", "create it and put your images in it"
        )
    return CaptionTarget(
        project.dataset_dir,
        project.config.dataset.caption_extension,
        project.config.project.trigger,
    )


def has_caption(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8", errors="replace").strip())
    except FileNotFoundError:
        return False


def backup_path(caption: Path) -> Path:
    """`<caption>.bak`, or the first free `<caption>.bakN`: an old backup is never replaced."""
    candidate = caption.with_name(caption.name + ".bak")
    n = 1
    while candidate.exists():
        candidate = caption.with_name(f"{caption.name}.bak{n}")
        n += 1
    return candidate


def caption_prompt(
    project_or_dir: Project | str | Path | CaptionTarget,
    style_tag: str | None = None,
    style_traits: str | None = None,
    prompt_file: str | Path | None = None,
) -> tuple[str, str]:
    """(style phrase, full prompt) as every image of this dataset will be asked."""
    target = (
        project_or_dir
        if isinstance(project_or_dir, CaptionTarget)
        else resolve_target(project_or_dir)
    )
    phrase = resolve_style_phrase(target.trigger, style_tag)
    return phrase, build_prompt(phrase, style_traits, load_template(prompt_file))


def caption_dataset(
    project_or_dir: Project | str | Path,
    backend: CaptionBackend,
    *,
    overwrite: bool = False,
    style_tag: str | None = None,
    style_traits: str | None = None,
    prompt_file: str | Path | None = None,
    retries: int = 2,
    on_progress: ProgressFn | None = None,
) -> CaptionSummary:
    """Write a caption beside every image that lacks one (all of them with `overwrite`).

    A caption that fails the post-checks is asked for again up to `retries` times, then the
    image is reported in `failed`. Errors that stop every request (bad key, wrong URL,
    missing model) are raised as WanloraError; captions written so far stay, and a rerun
    resumes.
    """
    target = resolve_target(project_or_dir)
    phrase, prompt = caption_prompt(target, style_tag, style_traits, prompt_file)
    images = find_images(target.dataset_dir)
    if not images:
        raise WanloraError(
            f"{target.dataset_dir}: no images (png, jpg, jpeg, webp, bmp)",
            "put your training images into this folder",
        )

    summary = CaptionSummary()
    todo = []
    for image in images:
        if not overwrite and has_caption(caption_path(image, target.caption_extension)):
            summary.skipped.append(image)
        else:
            todo.append(image)

    progress = on_progress or (lambda done, total, image: None)
    progress(0, len(todo), None)
    for done, image in enumerate(todo, start=1):
        _caption_one(image, target.caption_extension, backend, prompt, phrase, retries, summary)
        progress(done, len(todo), image)
    return summary


def _caption_one(
    image: Path,
    extension: str,
    backend: CaptionBackend,
    prompt: str,
    phrase: str,
    retries: int,
    summary: CaptionSummary,
) -> None:
    reason = ""
    for attempt in range(retries + 1):
        try:
            checked = check_caption(backend.caption(image, prompt), phrase)
        except ImageProblem as exc:
            log.warning("%s: skipped, %s", image.name, exc.one_line())
            summary.failed.append((image, exc.one_line()))
            return
        except CaptionRejected as exc:
            reason = exc.what
            log.info("%s: %s (try %d of %d)", image.name, reason, attempt + 1, retries + 1)
            continue
        break
    else:
        why = f"no usable caption after {retries + 1} tries: {reason}"
        log.warning("%s: skipped, %s", image.name, why)
        summary.failed.append((image, why))
        return

    target = caption_path(image, extension)
    if target.exists() and has_caption(target):  # only reached with overwrite
        backup = backup_path(target)
        atomic_write_text(backup, target.read_text(encoding="utf-8", errors="replace"))
        summary.backups.append(backup)
    atomic_write_text(target, checked.text)
    summary.written.append(target)
    summary.warnings.extend((image, w) for w in checked.warnings)


def review_pairs(project_or_dir: Project | str | Path) -> list[tuple[Path, str | None]]:
    """Every image with its caption text (None where it has none), in training order."""
    target = resolve_target(project_or_dir)
    pairs = []
    for image in find_images(target.dataset_dir):
        path = caption_path(image, target.caption_extension)
        text = path.read_text(encoding="utf-8", errors="replace").strip() if path.exists() else ""
        pairs.append((image, text or None))
    return pairs
