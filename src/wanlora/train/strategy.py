"""The parallel-strategy interface the training loop calls, and the one-process strategy.

The loop (loop.py) never asks how many processes exist. For each micro-batch it asks the
strategy whether this process trains it (`owns`); after each micro-batch it hands over the
loss and, at an optimiser step, the LoRA parameters, so the strategy can reduce their
gradients across processes (`reduce`); the run's files are written only where
`writes_files` is true. The run layer (wanlora.run) picks and builds the strategy, calls
`barrier` after a run and `should_stop` from its step callback, and closes it.

    SingleProcess   this module: every micro-batch is ours, nothing to reduce
    DataParallel    data_parallel.py: N ranks, one expert, batch b on rank b % N
    (future)        e.g. FSDP or a sequence-parallel strategy implement the same methods

A strategy also names the one-process config its run is equal to (`effective_config`): N
data-parallel ranks compute the one-process run with N times the accumulation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ..recipes.schema import RecipeConfig


class ParallelStrategy(Protocol):
    world: int  # processes that share one expert's steps
    writes_files: bool  # this process writes the LoRA, states and logs (one per run)

    def effective_config(self, config: RecipeConfig) -> RecipeConfig:
        """The one-process config this run computes."""

    def owns(self, batch_index: int) -> bool:
        """Whether this process trains micro-batch `batch_index` of the epoch order."""

    def reduce(
        self, loss: float | None, stepped: bool, params: list[torch.nn.Parameter]
    ) -> float | None:
        """After a micro-batch (loss None: another process's): at a step (`stepped`), the
        gradients of `params` summed over the processes; returns the loss to report."""

    def barrier(self) -> None:
        """Wait for every process of the run (e.g. until the files are written)."""

    def should_stop(self) -> bool:
        """Whether the run should stop now: the same answer in every process."""

    def close(self) -> None: ...


class SingleProcess:
    """One process trains every micro-batch; its gradients are the step's gradients."""

    world = 1
    writes_files = True

    def __init__(self, stop_check: Callable[[], bool] | None = None):
        self.stop_check = stop_check  # e.g. a worker's stop event: another worker failed

    def effective_config(self, config: RecipeConfig) -> RecipeConfig:
        return config

    def owns(self, batch_index: int) -> bool:
        return True

    def reduce(
        self, loss: float | None, stepped: bool, params: list[torch.nn.Parameter]
    ) -> float | None:
        return loss  # this micro-batch's loss: at a step, the step's last micro-batch's

    def barrier(self) -> None:
        pass

    def should_stop(self) -> bool:
        return bool(self.stop_check and self.stop_check())

    def close(self) -> None:
        pass
