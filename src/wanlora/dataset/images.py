"""Reading a training image into its bucket: the same pixels the reference trainer feeds the VAE.

The reference opens each image with PIL and converts it to RGB (dropping alpha, converting
CMYK with PIL's plain formula, clipping 16-bit grey to 8 bits, taking the first frame of an
animation). It does NOT apply the EXIF orientation tag: a phone photo stored sideways with a
"rotate 90" tag trains sideways. We do the same by default so that the same pixels reach the
VAE (parity); `wanlora check` warns about every image with a non-identity orientation tag.

Resize and crop into a bucket (W, H), as the reference: unless the image already has the
bucket's width or height, scale = max(W/w, H/h), new size int(w*scale + 0.5) x
int(h*scale + 0.5), PIL LANCZOS if scale > 1 else OpenCV INTER_AREA; then a centre crop with
left = (new_w - W) // 2, top = (new_h - H) // 2. (When one side already matches, the
reference only crops; we reproduce that too.)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import WanloraError

EXIF_ORIENTATION_TAG = 0x0112


@contextlib.contextmanager
def readable_image(path: Path) -> Iterator[None]:
    """Turn every way PIL can fail to read `path` into a WanloraError naming it and the fix."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise WanloraError(
            f"{path}: image is too large to decode safely ({exc})",
            "resize it below 89 megapixels (the recipe trains at about 1 megapixel)",
        ) from None
    except UnidentifiedImageError:
        raise WanloraError(
            f"{path}: not a readable image (empty, corrupt or not an image format PIL knows)",
            "re-export it as PNG or JPEG, or remove it from the dataset folder",
        ) from None
    except IsADirectoryError:
        raise WanloraError(f"{path}: is a folder, not an image", "rename or move it") from None
    except PermissionError:
        raise WanloraError(f"{path}: permission denied", "make the file readable") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise WanloraError(
            f"{path}: image cannot be decoded ({exc})",
            "the file is truncated or corrupt: re-export or re-download it",
        ) from None


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image with PIL, turning every failure into a WanloraError."""
    path = Path(path)
    with readable_image(path), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
        image.load()
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header (no full decode); WanloraError if unreadable."""
    with readable_image(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return image.size


def load_rgb(path: str | Path) -> Image.Image:
    """The image as the reference reads it: PIL, converted to RGB, no EXIF transpose."""
    image = open_image(path)
    try:
        return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise WanloraError(
            f"{path}: cannot convert to RGB ({exc})", "re-export it as an 8-bit RGB PNG or JPEG"
        ) from None


def resize_to_bucket(image: Image.Image | np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
    """Resize and centre-crop an RGB image into bucket (W, H), as the reference trainer does.

    Returns a uint8 array (H', W', 3); H', W' equal the bucket except in the reference's own
    edge case of one matching side and a smaller other side (see `load_bucketed_image`).
    """
    if isinstance(image, Image.Image):
        width, height = image.size
    else:
        height, width = image.shape[:2]
    bucket_width, bucket_height = bucket
    if (width, height) == (bucket_width, bucket_height):
        return np.asarray(image)
    if bucket_width == width or bucket_height == height:
        pixels = np.asarray(image)
    else:
        scale = max(bucket_width / width, bucket_height / height)
        width = int(width * scale + 0.5)
        height = int(height * scale + 0.5)
        if scale > 1:
            pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
            pixels = np.asarray(pil.resize((width, height), Image.LANCZOS))
        else:
            pixels = cv2.resize(np.asarray(image), (width, height), interpolation=cv2.INTER_AREA)
    left = (width - bucket_width) // 2
    top = (height - bucket_height) // 2
    return pixels[top : top + bucket_height, left : left + bucket_width]


def load_bucketed_image(path: str | Path, bucket: tuple[int, int]) -> np.ndarray:
    """uint8 array (H, W, 3) of the image at `path` resized and cropped into bucket (W, H)."""
    pixels = resize_to_bucket(load_rgb(path), bucket)
    if pixels.shape[:2] != (bucket[1], bucket[0]):
        raise WanloraError(
            f"{path}: does not fill its {bucket[0]}x{bucket[1]} bucket "
            f"({pixels.shape[1]}x{pixels.shape[0]} after the reference's crop)",
            "turn enable_bucket on, or crop the image to the resolution's aspect ratio",
        )
    return np.ascontiguousarray(pixels)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright; 2..8 = mirrored/rotated), 1 if absent."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a broken EXIF block must not stop a lint
        return 1


ORIENTATION_MEANING = {
    2: "mirrored left-right",
    3: "rotated 180 degrees",
    4: "mirrored top-bottom",
    5: "mirrored and rotated 90 degrees",
    6: "rotated 90 degrees clockwise",
    7: "mirrored and rotated 90 degrees",
    8: "rotated 90 degrees counter-clockwise",
}
