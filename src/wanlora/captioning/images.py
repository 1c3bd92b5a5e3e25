"""An image as a captioning model gets it: upright RGB, long side at most `max_side` pixels."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import WanloraError

DEFAULT_MAX_SIDE = 1024


class ImageProblem(WanloraError):
    """One image cannot be captioned (unreadable, or the server refused it); the others can."""


def load_for_captioning(path: Path, max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
    """Open, apply EXIF rotation, flatten transparency onto white, downscale if large."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageProblem(
            f"{path}: not a readable image ({exc})", "replace the file or remove it"
        ) from None
    if image.mode in ("RGBA", "LA", "P"):
        # transparent areas would turn black in RGB; white is what viewers show
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def image_data_url(path: Path, max_side: int = DEFAULT_MAX_SIDE) -> str:
    """A `data:` URL for a chat-completions request: PNG stays PNG (lossless flat art),
    everything else is sent as JPEG (smaller)."""
    image = load_for_captioning(path, max_side)
    buffer = io.BytesIO()
    if path.suffix.lower() == ".png":
        image.save(buffer, format="PNG", optimize=True)
        mime = "image/png"
    else:
        image.save(buffer, format="JPEG", quality=92)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
