"""Near-duplicate images: perceptual hashes (imagehash's phash, 64 bits) compared pairwise
with numpy bit operations, grouped with a union-find so that one warning names a whole
group. Pairs within VISUALLY_DIFFERENT_DISTANCE "look alike" and are handed to the caption
rules, which do not expect such images to have different captions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import imagehash
import numpy as np

from .report import CheckedImage, CheckReport, name_list

NEAR_DUPLICATE_DISTANCE = 8  # of 64 phash bits; resized/re-encoded copies land at or below
VISUALLY_DIFFERENT_DISTANCE = 16
MAX_IMAGES_FOR_CAPTION_PAIRS = 300  # pairwise caption comparison is quadratic


def near_duplicates(checked: list[CheckedImage], report: CheckReport) -> set[tuple[Path, Path]]:
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

    groups: dict[int, list[CheckedImage]] = {}
    for index, item in enumerate(hashed):
        groups.setdefault(root(index), []).append(item)
    for group in groups.values():
        if len(group) < 2:
            continue
        first, others = group[0], group[1:]
        report.warn(
            first.path,
            f"near-duplicate images: {first.path.name} looks like "
            f"{name_list([o.path for o in others])} "
            "(perceptual hash) -- the recipe wants 18 diverse images",
            first.report,
        )
    return alike


def _hash_distances(hashes: list[imagehash.ImageHash]) -> Iterable[tuple[int, np.ndarray]]:
    """For each i: the hamming distances to hashes i+1.. (numpy bit operations, one row each)."""
    bits = np.array([h.hash.flatten() for h in hashes], dtype=bool)
    packed = np.packbits(bits, axis=1)
    for i in range(len(hashes) - 1):
        xor = np.bitwise_xor(packed[i + 1 :], packed[i])
        yield i, np.unpackbits(xor, axis=1).sum(axis=1)
