"""What the training loop trains on: the run layer prepares it (items, cache, tensors).

The engine never loads images or builds caches: wanlora.run does (cache/build.py), then
hands train_expert a TrainingData. Its `dataset_hash` is the data's identity, kept in every
resume state: a resume on other data is refused.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..dataset.items import DatasetItem
from ..dataset.order import steps_per_epoch
from ..recipes.schema import RecipeConfig


@dataclass(frozen=True)
class TrainingData:
    items: list[DatasetItem]  # the epoch order deals these out (dataset/order.py)
    samples: list[tuple[torch.Tensor, torch.Tensor]]  # per item: (latent, text embedding)
    dataset_hash: str
    # items `[validation] items` holds out: never dealt out, validated on (validation.py)
    held_out: list[DatasetItem] = field(default_factory=list)
    held_out_samples: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def total_steps(self, config: RecipeConfig) -> int:
        """Optimiser steps of the whole run: every epoch's micro-batches / accumulation."""
        micro_batches = steps_per_epoch(self.items, config.dataset.batch_size)
        accumulation = config.training.gradient_accumulation_steps
        return math.ceil(config.training.max_train_epochs * micro_batches / accumulation)


def dataset_hash(items: list[DatasetItem], latent_paths: list[Path], text_paths: list[Path]) -> str:
    """Identity of the training data: the cache keys already hash image, bucket and caption."""
    digest = hashlib.sha256()
    for item, lat, txt in zip(items, latent_paths, text_paths, strict=True):
        digest.update(f"{lat.name}|{txt.name}|{item.num_repeats}\n".encode())
    return digest.hexdigest()[:16]
