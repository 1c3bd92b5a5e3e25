"""Aspect-ratio buckets, exactly as the reference trainer (musubi-tuner) makes and picks them.

With bucketing on, the buckets for a resolution (W, H) have about the area W*H: for every
width w from half the square side up to the side (step 16), the height is area // w rounded
down to a multiple of 16; (w, h) and (h, w) are both buckets. An image takes the bucket whose
aspect ratio is nearest its own (the first in sorted order on ties). With bucketing off there
is one bucket, the resolution itself. The step is 16 for the Wan 2.1 VAE's models and 32 for
TI2V-5B (the Wan 2.2 VAE's 16x stride times the DiT's 2x2 patch): `reso_step`.
"""

from __future__ import annotations

import math

RESO_STEP = 16
# How far `wanlora check` lets an image or video be upscaled into its bucket: a warning
# past UPSCALE_WARN (soft details), an error past UPSCALE_ERROR (mostly invented pixels).
UPSCALE_WARN = 1.5
UPSCALE_ERROR = 2.0


def bucket_fit(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[str | None, float]:
    """How a picture of `size` fits `bucket`, for lint: ("unfilled", 1.0) when one side
    matches but the other is short (the reference only crops then), ("upscale_error", s) or
    ("upscale_warn", s) past UPSCALE_ERROR / UPSCALE_WARN, else (None, s)."""
    width, height = size
    if bucket[0] == width or bucket[1] == height:
        short = width < bucket[0] or height < bucket[1]
        return ("unfilled" if short else None), 1.0
    scale = max(bucket[0] / width, bucket[1] / height)
    if scale > UPSCALE_ERROR:
        return "upscale_error", scale
    return ("upscale_warn" if scale > UPSCALE_WARN else None), scale


def round_down(value: int, step: int) -> int:
    return (value // step) * step


def make_buckets(resolution: tuple[int, int], reso_step: int = RESO_STEP) -> list[tuple[int, int]]:
    """All (W, H) buckets for `resolution`, deduplicated and sorted."""
    area = resolution[0] * resolution[1]
    side = int(math.sqrt(area))
    # at least one step: a small resolution at step 32 would otherwise start at width 0
    min_side = max(reso_step, round_down(side // 2, reso_step))
    buckets = set()
    for w in range(min_side, side + reso_step, reso_step):
        h = round_down(area // w, reso_step)
        buckets.add((w, h))
        buckets.add((h, w))
    return sorted(buckets)


def select_bucket(
    width: int,
    height: int,
    resolution: tuple[int, int],
    enable_bucket: bool = True,
    bucket_no_upscale: bool = False,
    reso_step: int = RESO_STEP,
) -> tuple[int, int]:
    """The (W, H) bucket the reference trainer gives an image of `width` x `height`.

    May return a side of 0 for an image under 16 pixels with bucket_no_upscale (as the
    reference does); the dataset lint reports that as an error.
    """
    resolution = (int(resolution[0]), int(resolution[1]))
    if not enable_bucket:
        return resolution
    area = resolution[0] * resolution[1]
    if bucket_no_upscale and width * height <= area:
        return round_down(width, reso_step), round_down(height, reso_step)
    return nearest_bucket(width / height, _buckets_cached(resolution, reso_step))


def nearest_bucket(aspect_ratio: float, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    # Same float64 arithmetic as the reference's numpy argmin: |w/h - ratio|, first minimum.
    best, best_error = buckets[0], math.inf
    for w, h in buckets:
        error = abs(w / h - aspect_ratio)
        if error < best_error:
            best, best_error = (w, h), error
    return best


_BUCKETS: dict[tuple[tuple[int, int], int], list[tuple[int, int]]] = {}


def _buckets_cached(resolution: tuple[int, int], reso_step: int) -> list[tuple[int, int]]:
    if (resolution, reso_step) not in _BUCKETS:
        _BUCKETS[resolution, reso_step] = make_buckets(resolution, reso_step)
    return _BUCKETS[resolution, reso_step]
