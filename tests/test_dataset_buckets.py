"""Buckets and resize/crop: the reference trainer's exact behaviour (TRAINER_SPEC section 1)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from wanlora.dataset.buckets import make_buckets, select_bucket
from wanlora.dataset.images import load_bucketed_image, resize_to_bucket
from wanlora.errors import WanloraError

# Measured with the reference commit (TRAINER_SPEC.md section 1).
MEASURED = [
    ((1024, 1024), (960, 960)),
    ((1024, 768), (1104, 832)),
    ((1920, 1080), (1280, 720)),
    ((1000, 1500), (784, 1168)),
    ((640, 480), (1104, 832)),
    ((2000, 500), (1920, 480)),
    ((300, 1200), (480, 1920)),
]


@pytest.mark.parametrize(("size", "bucket"), MEASURED)
def test_measured_buckets(size, bucket):
    assert select_bucket(*size, (960, 960), True, False) == bucket


def test_bucket_list_for_960():
    buckets = make_buckets((960, 960))
    assert buckets == sorted(set(buckets))
    assert (960, 960) in buckets and (480, 1920) in buckets and (1920, 480) in buckets
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in buckets)
    assert all(w * h <= 960 * 960 for w, h in buckets)
    assert min(min(b) for b in buckets) == 480
    # every w from 480 to 960 step 16, and its transpose
    assert len(buckets) == len({(w, 921600 // w // 16 * 16) for w in range(480, 976, 16)}) * 2 - 1


def test_no_upscale_uses_own_size_rounded_down():
    assert select_bucket(500, 300, (960, 960), True, True) == (496, 288)
    # larger than the area: normal bucket
    assert select_bucket(1920, 1080, (960, 960), True, True) == (1280, 720)


def test_bucketing_off_is_one_bucket():
    assert select_bucket(1920, 1080, (960, 544), False, False) == (960, 544)
    assert select_bucket(100, 100, (960, 544), False, True) == (960, 544)


def test_tie_takes_first_sorted_bucket():
    buckets = make_buckets((960, 960))
    ratio = (buckets[0][0] / buckets[0][1] + buckets[1][0] / buckets[1][1]) / 2
    width = 100_000
    height = round(width / ratio)
    chosen = select_bucket(width, height, (960, 960))
    errors = [abs(w / h - width / height) for w, h in buckets]
    assert chosen == buckets[int(np.argmin(errors))]  # numpy argmin = first minimum


def reference_resize(pixels: np.ndarray, bucket):
    """The reference's resize_image_to_bucket, written out independently for the test."""
    h, w = pixels.shape[:2]
    bw, bh = bucket
    if (bw, bh) == (w, h):
        return pixels
    if bw == w or bh == h:
        out = pixels
    else:
        scale = max(bw / w, bh / h)
        w, h = int(w * scale + 0.5), int(h * scale + 0.5)
        if scale > 1:
            out = np.array(Image.fromarray(pixels).resize((w, h), Image.LANCZOS))
        else:
            out = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA)
    left, top = (w - bw) // 2, (h - bh) // 2
    return out[top : top + bh, left : left + bw]


@pytest.mark.parametrize(
    ("size", "resolution", "no_upscale"),
    [
        ((1024, 768), (256, 256), False),
        ((100, 60), (256, 256), False),
        ((200, 150), (256, 256), True),
        ((256, 300), (256, 256), False),
    ],
)
def test_load_bucketed_image_matches_reference(tmp_path, size, resolution, no_upscale):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    bucket = select_bucket(*size, resolution, True, no_upscale)
    out = load_bucketed_image(path, bucket)
    assert out.dtype == np.uint8 and out.shape == (bucket[1], bucket[0], 3)
    np.testing.assert_array_equal(out, reference_resize(pixels, bucket))


def test_upscale_uses_lanczos_and_downscale_inter_area():
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    up = resize_to_bucket(small, (80, 80))
    np.testing.assert_array_equal(
        up, np.array(Image.fromarray(small).resize((80, 80), Image.LANCZOS))
    )
    big = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    down = resize_to_bucket(big, (80, 80))
    np.testing.assert_array_equal(down, cv2.resize(big, (80, 80), interpolation=cv2.INTER_AREA))


def test_centre_crop_integer_maths():
    # 1000x1500 -> scale max(784/1000, 1168/1500) = 0.7866..; 787x1180 then crop 784x1168
    pixels = np.zeros((1500, 1000, 3), dtype=np.uint8)
    pixels[:, :, 0] = np.arange(1000, dtype=np.uint8)[None, :] % 251
    out = resize_to_bucket(pixels, (784, 1168))
    assert out.shape == (1168, 784, 3)
    np.testing.assert_array_equal(out, reference_resize(pixels, (784, 1168)))


def test_exif_orientation_is_not_applied(tmp_path):
    """Parity with the reference: a sideways-tagged photo trains as stored."""
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    out = load_bucketed_image(path, (64, 32))
    assert out.shape == (32, 64, 3)  # not turned into 32x64
    assert out[:, :16].mean() > 200 and out[:, 48:].mean() < 50


def test_rgba_cmyk_and_grey_are_converted_to_rgb(tmp_path):
    for mode, value in (("RGBA", (10, 20, 30, 0)), ("CMYK", (0, 255, 0, 0)), ("L", 77)):
        path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (32, 32), value).save(path)
        out = load_bucketed_image(path, (32, 32))
        expected = np.array(Image.open(path).convert("RGB"))
        np.testing.assert_array_equal(out, expected)


def test_image_that_cannot_fill_its_bucket_is_a_clear_error(tmp_path):
    # bucketing off, 960 wide but only 500 high: the reference only crops -> 500 rows
    path = tmp_path / "wide.png"
    Image.new("RGB", (960, 500)).save(path)
    with pytest.raises(WanloraError, match="does not fill its 960x960 bucket"):
        load_bucketed_image(path, (960, 960))


def test_broken_image_is_a_clear_error(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(b"")
    with pytest.raises(WanloraError, match="zero.png: not a readable image"):
        load_bucketed_image(path, (16, 16))
