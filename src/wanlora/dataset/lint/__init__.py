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

The rules are grouped by what they look at, one module each:

- `report`: the findings (`Finding`, `ImageReport`, `CheckReport`) and `CheckedImage`, what
  the dataset-wide rules need of one image
- `check`: `check_dataset`, which walks the dataset folders and calls the rules in order;
  `project_for_check` (a plain image folder checks with the recipe's settings)
- `files`: what is in a folder (pairing, leftovers, symlinks, folders outside the project,
  the image count)
- `images`: one image file (decoding, colour modes, EXIF orientation, buckets and upscaling)
- `captions`: one caption file (size, encoding, tokens, trigger) and captions across images
  (numbering, other images' names, identical or near-identical text)
- `duplicates`: near-duplicate images by perceptual hash

A new kind of input (videos) gets its own module with a per-file check like
`images.check_image`, and one call in `check`.
"""

from .check import check_dataset, project_for_check
from .report import CheckReport, Finding, ImageReport

__all__ = ["CheckReport", "Finding", "ImageReport", "check_dataset", "project_for_check"]
