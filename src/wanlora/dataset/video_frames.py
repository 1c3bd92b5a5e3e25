"""The pixels of video clips, as the reference trainer feeds them to the VAE.

Each frame is decoded (dataset/video.py) and resized and centre-cropped into the clip's
bucket with the same code as a training image (`images.resize_to_bucket`); a clip is its
frames stacked in order. A video is decoded once for all its clips, keeping only the frames
some clip uses (like musubi-tuner, which holds a video's frames in memory while caching).
Frames stay uint8 here; the VAE side (models.vae.encode_video_latents) maps them to [-1, 1]
with the same x / 127.5 - 1 as images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import WanloraError
from .clips import Clip
from .images import resize_to_bucket
from .video import decode_frames


def load_video_clips(
    source: Path, clips: Sequence[Clip], bucket: tuple[int, int]
) -> Iterator[tuple[Clip, np.ndarray]]:
    """(clip, uint8 frames (F, H, W, 3) in `bucket` (W, H)) for every clip of one video."""
    wanted = {index for clip in clips for index in clip.frame_indices}
    frames = {}
    for index, image in decode_frames(source, wanted):
        pixels = resize_to_bucket(image, bucket)
        if pixels.shape[:2] != (bucket[1], bucket[0]):
            raise WanloraError(
                f"{source}: frame {index} does not fill its {bucket[0]}x{bucket[1]} bucket "
                f"({pixels.shape[1]}x{pixels.shape[0]} after the reference's crop)",
                "re-encode the video at one size for all frames",
            )
        frames[index] = np.ascontiguousarray(pixels)
    for clip in clips:
        yield clip, np.stack([frames[index] for index in clip.frame_indices])


def load_clip_frames(clip: Clip, bucket: tuple[int, int]) -> np.ndarray:
    """uint8 frames (F, H, W, 3) of one clip in `bucket` (W, H)."""
    ((_, frames),) = load_video_clips(clip.source, [clip], bucket)
    return frames
