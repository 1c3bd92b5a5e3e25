"""Image-to-video samples (I2V-A14B): the first frame, the pipeline, and what is saved.

first frame  the user's image resized and centre-cropped to the sample size, with the
             training bucket's own resize (dataset.images.resize_to_bucket), so the
             model sees a first frame the way it saw every training clip's
pipeline     diffusers' WanImageToVideoPipeline: it builds the conditioning as the
             official sampler does (mask 1 on latent frame 0; y = VAE code of [image,
             F-1 frames of pixel value 0]) and switches the experts at boundary_ratio
             (the high-noise expert for t >= 900 with Wan 2.2 I2V's 0.900). The Wan 2.2
             experts have no image encoder, so no CLIP is loaded or passed.
outputs      as every clip sample's: an MP4 beside the PNG of its first frame (files.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..dataset.images import resize_to_bucket
from ..errors import WanloraError
from ..recipes import Project


def first_frame_image(path: Path, width: int, height: int) -> Image.Image:
    """The conditioning image at the sample size (W x H), resized and centre-cropped."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise WanloraError(
            f"{path}: cannot read the image to start the video from ({exc})",
            "pass a PNG or JPEG with --image, or set [sample] image in wanlora.toml",
        ) from None
    pixels = resize_to_bucket(rgb, (width, height))
    if pixels.shape[:2] != (height, width):  # the reference's one-side-matches edge case
        pixels = np.asarray(Image.fromarray(pixels).resize((width, height), Image.LANCZOS))
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def i2v_pipeline(**parts):
    """diffusers' WanImageToVideoPipeline on our models (vae, scheduler, transformer,
    transformer_2, boundary_ratio): no tokenizer or text encoder (our embeddings go in), no
    image encoder."""
    # imported here, quietly: the module pulls in transformers' CLIP image processor (unused:
    # Wan 2.2 has no image encoder), which warns on import when torchvision is missing
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        from diffusers import WanImageToVideoPipeline
    finally:
        transformers_logging.set_verbosity(verbosity)

    return WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, image_processor=None, image_encoder=None, **parts
    )


def start_image(
    project: Project, image: Path | None, width: int, height: int
) -> Image.Image | None:
    """Image-to-video recipes: the first frame samples start from (`image` as given, else
    [sample] image relative to the project), at width x height. None for other recipes."""
    config = project.config
    if config.dit_task != "i2v":
        if image is not None:
            raise WanloraError(
                f"--image: recipe {config.recipe} renders from text only",
                "drop --image (it is for image-to-video recipes such as wan22-i2v)",
            )
        return None
    if image is None and config.sample.image is None:
        raise WanloraError(
            f"recipe {config.recipe} renders videos from a first frame, but none is given",
            'pass --image PATH, or set [sample] image = "start.png" in wanlora.toml',
        )
    path = image if image is not None else project.root / Path(config.sample.image).expanduser()
    if not path.is_file():
        raise WanloraError(
            f"{path}: the image to start the video from does not exist",
            "pass an existing PNG or JPEG with --image, or fix [sample] image in wanlora.toml",
        )
    return first_frame_image(path, width, height)

