"""`wanlora check`: lint a dataset before anyone pays for a GPU. Nothing is ever modified.

Errors (training would fail or train on something broken): no images; an image that cannot
be decoded; an image without caption or a caption without image; an empty, unreadable or
non-UTF-8 caption; a caption file over 64 KiB (surely the wrong file); an image upscaled
more than 2x into its bucket (UPSCALE_ERROR: each trained pixel would be mostly invented);
a broken symlink or symlink loop named like an image; a bad dataset.toml.

Warnings (training runs, but probably not as intended): an image count other than the
recipe's 18; near-duplicate images (perceptual hash distance <= NEAR_DUPLICATE_DISTANCE);
a caption not starting with the project's trigger phrase; captions over the text encoder's
512 tokens (the rest is cut off); identical or near-identical captions on visually different
images, numbering labels and other images' file names in captions (signs of captions put on
the wrong images); alpha, CMYK, 16-bit and animated images (the trainer converts them with
PIL's `convert("RGB")`, each message says what that does); a non-identity EXIF orientation
(NOT applied, as in the reference: the image trains as stored); upscaling over 1.5x; files
the trainer skips (.gif, .tiff, folders named like images); symlinks or dataset folders
outside the project (read, but flagged: a shared dataset.toml can point anywhere); keys of
a dataset.toml that wanlora ignores.

Video datasets are checked by `video_lint` (one row per video, with its clips).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from ..errors import WanloraError
from ..recipes.project import Project
from .buckets import UPSCALE_ERROR, UPSCALE_WARN, select_bucket
from .captions import read_caption
from .images import ORIENTATION_MEANING, exif_orientation, open_image
from .scan import describe_not_file, scan_folder
from .sources import DatasetEntry, dataset_sources
from .tokens import TEXT_TOKEN_LIMIT, TokenCounter, project_token_counter
from .video_lint import VideoReport, check_task_needs_videos, check_videos, largest_bucket

RECIPE_IMAGE_COUNT = 18
CAPTION_MAX_BYTES = 64 * 1024
NEAR_DUPLICATE_DISTANCE = 8  # of 64 phash bits; resized/re-encoded copies land at or below
VISUALLY_DIFFERENT_DISTANCE = 16
SIMILAR_CAPTION_RATIO = 0.9
MAX_IMAGES_FOR_CAPTION_PAIRS = 300  # pairwise caption comparison is quadratic
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
    videos: list[VideoReport] = field(default_factory=list)  # video_lint.py
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
class _Checked:
    """What the dataset-wide checks need of one image."""

    report: ImageReport
    path: Path
    caption: str | None
    phash: imagehash.ImageHash | None


def check_dataset(project: Project, token_counter: TokenCounter | None = None) -> CheckReport:
    """Lint every dataset folder of `project`; never raises for dataset problems."""
    report = CheckReport()
    counter = token_counter or project_token_counter(project)
    report.token_count_source = counter.note
    report.tokens_are_estimate = counter.is_estimate
    try:
        sources = dataset_sources(project)
    except WanloraError as exc:
        report.error(project.config_file, exc.one_line())
        return report
    if sources.ignored_keys:
        report.warn(
            sources.dataset_toml,
            "keys wanlora ignores: " + "; ".join(sources.ignored_keys),
        )
    trigger = project.config.project.trigger
    checked: list[_Checked] = []
    for entry in sources.entries:
        checked.extend(_check_entry(entry, project, counter, trigger, report))
    report.videos = check_videos(sources.videos, project, counter, report)
    check_task_needs_videos(project.config.task, report.videos, project.dataset_dir, report)
    report.largest_bucket, report.largest_bucket_tokens = largest_bucket(
        [image.bucket for image in report.images], report.videos, project.config.task
    )

    if not checked and not report.errors and not sources.videos:
        report.error(project.dataset_dir, "no images in the dataset")
    elif checked and len(checked) != RECIPE_IMAGE_COUNT and not sources.videos:
        report.warn(
            project.dataset_dir,
            f"{len(checked)} images; the recipe uses exactly {RECIPE_IMAGE_COUNT} "
            "(its settings are tuned for 18 images x 100 epochs)",
        )
    alike = _near_duplicates(checked, report)
    _caption_mixups(checked, trigger, alike, report)
    return report


def _check_entry(
    entry: DatasetEntry,
    project: Project,
    counter: TokenCounter,
    trigger: str | None,
    report: CheckReport,
) -> list[_Checked]:
    try:
        scan = scan_folder(entry.image_directory, entry.caption_extension, entry.source)
    except WanloraError as exc:
        report.error(entry.image_directory, exc.one_line())
        return []
    folder = entry.image_directory
    if not _inside(folder, project.root):
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

    results = []
    for image_path in scan.images:
        image_report = ImageReport(
            path=str(image_path),
            width=None,
            height=None,
            bucket=None,
            num_repeats=entry.num_repeats,
        )
        report.images.append(image_report)
        phash = _check_image(image_path, entry, folder, image_report, report)
        caption = _check_caption(
            image_path, scan.captions[image_path], folder, counter, trigger, image_report, report
        )
        results.append(_Checked(image_report, image_path, caption, phash))
    return results


def _check_image(
    path: Path, entry: DatasetEntry, folder: Path, image: ImageReport, report: CheckReport
) -> imagehash.ImageHash | None:
    if path.is_symlink() and not _inside(path.resolve(), folder):
        report.warn(path, f"symlink to {path.resolve()}, outside the dataset folder", image)
    try:
        pil = open_image(path)
    except WanloraError as exc:
        report.error(path, exc.what + (f" -- {exc.fix}" if exc.fix else ""), image)
        return None
    with pil:
        width, height = pil.size
        image.width, image.height, image.mode = width, height, pil.mode
        _mode_findings(path, pil, image, report)
        orientation = exif_orientation(pil)
        if orientation != 1:
            report.warn(
                path,
                f"EXIF orientation {orientation} ({ORIENTATION_MEANING[orientation]}) is NOT "
                f"applied, as in the reference trainer: it trains as stored ({width}x{height}), "
                "so it will look turned; rotate the pixels and drop the tag "
                "(e.g. `mogrify -auto-orient`) to train it upright",
                image,
            )
        bucket = select_bucket(
            width, height, entry.resolution, entry.enable_bucket, entry.bucket_no_upscale
        )
        image.bucket = list(bucket)
        _bucket_findings(path, (width, height), bucket, image, report)
        try:
            return imagehash.phash(pil.convert("RGB"))
        except (OSError, ValueError):
            return None


def _mode_findings(path: Path, pil: Image.Image, image: ImageReport, report: CheckReport) -> None:
    mode = pil.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in pil.info:
        report.warn(
            path,
            "has an alpha channel: the trainer drops it (PIL convert('RGB')), so transparent "
            "areas show their hidden colour, often black -- flatten it onto a background",
            image,
        )
    if mode == "CMYK":
        report.warn(
            path,
            "is CMYK: the trainer converts it with PIL's plain CMYK->RGB (no colour profile), "
            "colours may shift -- save it as RGB",
            image,
        )
    if mode.startswith("I") or mode == "F":
        report.warn(
            path,
            f"is 16-bit/32-bit greyscale ({mode}): PIL's RGB conversion clips it to 0..255, "
            "so it trains almost white -- save it as 8-bit",
            image,
        )
    elif _png_bit_depth(path) == 16:
        report.warn(
            path,
            "is 16 bits per channel: the trainer reads it as 8-bit RGB (precision dropped, "
            "looks the same) -- fine, or save it as 8-bit",
            image,
        )
    frames = getattr(pil, "n_frames", 1)
    if getattr(pil, "is_animated", False) and frames > 1:
        report.warn(path, f"is animated ({frames} frames): only the first frame is trained", image)


def _png_bit_depth(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            header = f.read(26)
    except OSError:
        return None
    if header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR":
        return header[24]
    return None


def _bucket_findings(
    path: Path,
    size: tuple[int, int],
    bucket: tuple[int, int],
    image: ImageReport,
    report: CheckReport,
) -> None:
    width, height = size
    if min(bucket) < 16:
        report.error(
            path,
            f"{width}x{height} is too small for any bucket with bucket_no_upscale -- "
            "use a larger image or set bucket_no_upscale = false",
            image,
        )
        return
    if bucket[0] == width or bucket[1] == height:
        # The reference only crops here; an image smaller than its bucket stays too small.
        if width < bucket[0] or height < bucket[1]:
            report.error(
                path,
                f"{width}x{height} does not fill its {bucket[0]}x{bucket[1]} bucket (the "
                "reference trainer only crops when one side matches) -- crop it to the "
                "resolution's aspect ratio or turn enable_bucket on",
                image,
            )
        return
    scale = max(bucket[0] / width, bucket[1] / height)
    if scale > UPSCALE_ERROR:
        report.error(
            path,
            f"{width}x{height} is too small: it would be upscaled {scale:.1f}x into its "
            f"{bucket[0]}x{bucket[1]} bucket (limit {UPSCALE_ERROR:g}x) -- use an image at least "
            f"{_min_size(bucket, width, height)} or drop it",
            image,
        )
    elif scale > UPSCALE_WARN:
        report.warn(
            path,
            f"{width}x{height} is upscaled {scale:.1f}x into its {bucket[0]}x{bucket[1]} bucket "
            "(soft details) -- a larger image trains sharper",
            image,
        )


def _min_size(bucket: tuple[int, int], width: int, height: int) -> str:
    scale = max(bucket[0] / width, bucket[1] / height) / UPSCALE_ERROR
    return f"{int(width * scale + 0.999)}x{int(height * scale + 0.999)}"


def _check_caption(
    image_path: Path,
    caption_path: Path,
    folder: Path,
    counter: TokenCounter,
    trigger: str | None,
    image: ImageReport,
    report: CheckReport,
) -> str | None:
    if not caption_path.exists() and not caption_path.is_symlink():
        report.error(
            image_path,
            f"no caption file {caption_path.name} -- write one (or run `wanlora caption`)",
            image,
        )
        return None
    if caption_path.is_symlink() and not _inside(caption_path.resolve(), folder):
        report.warn(
            caption_path, f"symlink to {caption_path.resolve()}, outside the dataset folder", image
        )
    try:
        size = caption_path.stat().st_size
    except OSError:
        size = 0
    try:
        caption = read_caption(caption_path)
    except WanloraError as exc:
        report.error(caption_path, exc.what + (f" -- {exc.fix}" if exc.fix else ""), image)
        return None
    image.caption_chars = len(caption)
    if size > CAPTION_MAX_BYTES:
        report.error(
            caption_path,
            f"caption file is {_human_size(size)}, far beyond the text encoder's "
            f"{TEXT_TOKEN_LIMIT} tokens -- is it the right file? keep captions to a few sentences",
            image,
        )
        image.caption_tokens = counter.count(caption)
        return None  # not compared with other captions: far too long to be one
    if not caption:
        report.error(caption_path, "caption is empty -- describe the image in it", image)
        return caption
    tokens = counter.count(caption)
    image.caption_tokens = tokens
    if caption.startswith("\ufeff"):
        report.warn(
            caption_path,
            "starts with a UTF-8 byte-order mark, which the trainer keeps as text "
            "-- save it as UTF-8 without BOM",
            image,
        )
    if tokens > TEXT_TOKEN_LIMIT:
        estimate = " (estimated)" if counter.is_estimate else ""
        report.warn(
            caption_path,
            f"caption is {tokens} umT5 tokens{estimate}; the text encoder keeps the first "
            f"{TEXT_TOKEN_LIMIT} and drops the rest -- shorten it",
            image,
        )
    if trigger and not caption.lstrip("\ufeff").startswith(trigger):
        where = "is not at the start" if trigger in caption else "is missing"
        report.warn(
            caption_path,
            f'trigger phrase "{trigger}" {where} -- the recipe starts every caption with it',
            image,
        )
    return caption


def _human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _hash_distances(hashes: list[imagehash.ImageHash]) -> Iterable[tuple[int, np.ndarray]]:
    """For each i: the hamming distances to hashes i+1.. (numpy bit operations, one row each)."""
    bits = np.array([h.hash.flatten() for h in hashes], dtype=bool)
    packed = np.packbits(bits, axis=1)
    for i in range(len(hashes) - 1):
        xor = np.bitwise_xor(packed[i + 1 :], packed[i])
        yield i, np.unpackbits(xor, axis=1).sum(axis=1)


def _near_duplicates(checked: list[_Checked], report: CheckReport) -> set[tuple[Path, Path]]:
    """Warn about groups of near-duplicate images; return the pairs that look alike at all
    (only for datasets small enough for the pairwise caption checks)."""
    hashed = [c for c in checked if c.phash is not None]
    if len(hashed) < 2:
        return set()
    parent = list(range(len(hashed)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keep_alike = len(hashed) <= MAX_IMAGES_FOR_CAPTION_PAIRS
    alike: set[tuple[Path, Path]] = set()
    for i, distances in _hash_distances([c.phash for c in hashed]):
        for offset in np.flatnonzero(distances <= NEAR_DUPLICATE_DISTANCE):
            parent[root(i + 1 + int(offset))] = root(i)
        if keep_alike:
            for offset in np.flatnonzero(distances <= VISUALLY_DIFFERENT_DISTANCE):
                alike.add((hashed[i].path, hashed[i + 1 + int(offset)].path))

    groups: dict[int, list[_Checked]] = {}
    for index, item in enumerate(hashed):
        groups.setdefault(root(index), []).append(item)
    for group in groups.values():
        if len(group) < 2:
            continue
        first, others = group[0], group[1:]
        report.warn(
            first.path,
            f"near-duplicate images: {first.path.name} looks like {_names([o.path for o in others])} "
            "(perceptual hash) -- the recipe wants 18 diverse images",
            first.report,
        )
    return alike


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:MAX_NAMES_LISTED])
    more = len(paths) - MAX_NAMES_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


NUMBER_LABEL = re.compile(
    r"^\W*(?:(?:image|img|caption|photo|picture|file)\s*(?:no\.?|#)?\s*(\d+)\b|(\d+)\s*[.):])",
    re.IGNORECASE,
)
WORD = re.compile(r"[^\s,;:()\[\]\"'<>]+")  # linear-time: no backtracking on long text


def _caption_mixups(
    checked: list[_Checked],
    trigger: str | None,
    alike: set[tuple[Path, Path]],
    report: CheckReport,
) -> None:
    """Signs of captions on the wrong images (the recipe's warning about ChatGPT numbering)."""
    with_caption = [c for c in checked if c.caption]
    names = {c.path.name.lower() for c in checked}
    for item in with_caption:
        label = NUMBER_LABEL.match(item.caption)
        if label:
            number = int(label.group(1) or label.group(2))
            own = re.findall(r"\d+", item.path.stem)
            mismatch = (
                f", but this image is number {int(own[-1])}"
                if own and int(own[-1]) != number
                else ""
            )
            report.warn(
                item.path,
                f'caption starts with a numbering label "{label.group(0).strip()}"{mismatch} '
                "-- remove the label (it is trained as text) and check the caption matches the image",
                item.report,
            )
        for word in WORD.findall(item.caption):
            mentioned = word.rstrip(".!?")
            if mentioned.lower() in names and mentioned.lower() != item.path.name.lower():
                report.warn(
                    item.path,
                    f"caption mentions another image's file name ({mentioned}) -- "
                    "is this caption on the wrong image?",
                    item.report,
                )

    by_text: dict[str, list[_Checked]] = {}
    for item in with_caption:
        by_text.setdefault(item.caption, []).append(item)
    for group in by_text.values():
        if len(group) > 1:
            report.warn(
                group[0].path,
                f"identical caption on {len(group)} images: {_names([g.path for g in group])} "
                "-- each image needs its own caption",
                group[0].report,
            )

    if len(with_caption) > MAX_IMAGES_FOR_CAPTION_PAIRS:
        return
    bodies = [_caption_body(c.caption, trigger) for c in with_caption]
    for i, a in enumerate(with_caption):
        similar = []
        for j in range(i + 1, len(with_caption)):
            b = with_caption[j]
            if a.caption == b.caption or a.phash is None or b.phash is None:
                continue
            if (a.path, b.path) in alike:  # images that look alike may share words
                continue
            matcher = difflib.SequenceMatcher(None, bodies[i], bodies[j], autojunk=False)
            if (
                matcher.real_quick_ratio() >= SIMILAR_CAPTION_RATIO
                and matcher.quick_ratio() >= SIMILAR_CAPTION_RATIO
                and matcher.ratio() >= SIMILAR_CAPTION_RATIO
            ):
                similar.append(b.path)
        if similar:
            report.warn(
                a.path,
                f"caption of {a.path.name} is almost the same as that of {_names(similar)} "
                f"(>= {SIMILAR_CAPTION_RATIO:.0%} of words) but the images look different "
                "-- is a caption on the wrong image?",
                a.report,
            )


def _caption_body(caption: str, trigger: str | None) -> list[str]:
    """The caption's words after the trigger phrase: compared word by word, not by letters."""
    text = caption.lower()
    if trigger and text.startswith(trigger.lower()):
        text = text[len(trigger) :]
    return re.findall(r"\w+", text)


def project_for_check(directory: str | Path) -> Project:
    """The project in `directory`, or, for a plain folder of images, the wan22-t2v recipe's
    settings applied to that folder (so `wanlora check some/images` works before `init`)."""
    from ..recipes import PROJECT_FILE, load_project, load_recipe

    root = Path(directory).expanduser()
    if (root / PROJECT_FILE).is_file() or not root.is_dir():
        return load_project(root)
    config = load_recipe("wan22-t2v")
    config.dataset.directory = "."
    return Project(root=root.resolve(), config=config)
