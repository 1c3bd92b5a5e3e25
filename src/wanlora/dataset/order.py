"""The order items are trained in: batches of one bucket, shuffled each epoch.

As the reference (musubi-tuner): every item appears num_repeats times; items are grouped by
bucket, a bucket being (width, height, frames): video clips of different lengths never
share a batch, and images are 1-frame items; each bucket is cut into batches of `batch_size` (the last one may be short, and a
batch never mixes buckets); at each epoch the items within every bucket and then the list of
batches are shuffled with Python's `random`, seeded from seed + epoch, so a run is the same
every time. Steps per epoch = sum over buckets of ceil(items_in_bucket * repeats / batch);
for the recipe's batch size 1 this equals ceil(items * repeats / batch). For batch > 1 it can
be more (short batches per bucket), which is what musubi does. (musubi keeps buckets per
[[datasets]] entry; we group equal buckets across entries, which only matters for batch > 1.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from .items import DatasetItem


def bucket_groups(items: Sequence[DatasetItem]) -> dict[tuple[int, int, int], list[int]]:
    """(W, H, frames) -> item indices (each repeated num_repeats times), in sorted order."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.batch_key, []).extend([index] * item.num_repeats)
    return {bucket: groups[bucket] for bucket in sorted(groups)}


def steps_per_epoch(items: Sequence[DatasetItem], batch_size: int) -> int:
    return sum(math.ceil(len(group) / batch_size) for group in bucket_groups(items).values())


def epoch_batches(
    items: Sequence[DatasetItem], batch_size: int, epoch: int, seed: int
) -> list[list[int]]:
    """Item indices per batch for `epoch`; deterministic in (items, batch_size, epoch, seed)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = random.Random(seed + epoch)
    groups = bucket_groups(items)
    for group in groups.values():
        rng.shuffle(group)
    batches = [
        group[start : start + batch_size]
        for group in groups.values()
        for start in range(0, len(group), batch_size)
    ]
    rng.shuffle(batches)
    return batches
