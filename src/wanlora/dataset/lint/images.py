"""Rules about one image file: does it decode, what PIL's `convert("RGB")` will do to its
mode (alpha, CMYK, 16-bit, animation), its EXIF orientation (not applied, as in the
reference trainer), and how far it is scaled into its bucket (UPSCALE_WARN, UPSCALE_ERROR).
Returns the image's perceptual hash for the duplicate rules.
"""

from __future__ import annotations

from pathlib import Path

import imagehash
from PIL import Image

from ...errors import WanloraError
from ..buckets import UPSCALE_ERROR, bucket_fit, select_bucket
from ..entry import DatasetEntry
from ..images import ORIENTATION_MEANING, exif_orientation, open_image
from .files import symlink_outside
from .report import CheckReport, ImageReport


def check_image(
    path: Path, entry: DatasetEntry, folder: Path, image: ImageReport, report: CheckReport
) -> imagehash.ImageHash | None:
    """Fill `image`'s size, mode and bucket; report what is wrong; the perceptual hash."""
    target = symlink_outside(path, folder)
    if target is not None:
        report.warn(path, f"symlink to {target}, outside the dataset folder", image)
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
            width, height, entry.resolution, entry.enable_bucket, entry.bucket_no_upscale,
            entry.reso_step,
        )
        image.bucket = list(bucket)
        _bucket_findings(path, (width, height), bucket, image, report, entry.reso_step)
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
    reso_step: int = 16,
) -> None:
    width, height = size
    if min(bucket) < reso_step:
        report.error(
            path,
            f"{width}x{height} is too small for any bucket with bucket_no_upscale -- "
            "use a larger image or set bucket_no_upscale = false",
            image,
        )
        return
    fit, scale = bucket_fit((width, height), bucket)
    if fit == "unfilled":  # the reference only crops here: the image stays too small
        report.error(
            path,
            f"{width}x{height} does not fill its {bucket[0]}x{bucket[1]} bucket (the "
            "reference trainer only crops when one side matches) -- crop it to the "
            "resolution's aspect ratio or turn enable_bucket on",
            image,
        )
    elif fit == "upscale_error":
        report.error(
            path,
            f"{width}x{height} is too small: it would be upscaled {scale:.1f}x into its "
            f"{bucket[0]}x{bucket[1]} bucket (limit {UPSCALE_ERROR:g}x) -- use an image at least "
            f"{_min_size(bucket, width, height)} or drop it",
            image,
        )
    elif fit == "upscale_warn":
        report.warn(
            path,
            f"{width}x{height} is upscaled {scale:.1f}x into its {bucket[0]}x{bucket[1]} bucket "
            "(soft details) -- a larger image trains sharper",
            image,
        )


def _min_size(bucket: tuple[int, int], width: int, height: int) -> str:
    scale = max(bucket[0] / width, bucket[1] / height) / UPSCALE_ERROR
    return f"{int(width * scale + 0.999)}x{int(height * scale + 0.999)}"
