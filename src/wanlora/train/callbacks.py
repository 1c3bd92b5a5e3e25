"""What the training loop tells the world, and how listeners plug in.

The loop (loop.py) calls two kinds of callbacks and knows nothing about who listens: the
run layer (wanlora.run) passes in progress bars, TensorBoard logging, worker messages,
epoch-end samples (wanlora.sampling), and stop requests. A callback raises StopTraining to
end the run after the current step (a step callback) or the epoch (an epoch-end callback);
the loop saves a resume state there first, never mid-step.

    on_step(StepReport)                  after every optimiser step
    on_epoch_end(expert, epochs, model)  after every completed epoch; the model is in train
                                         mode and carries the LoRA as it is now
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class StepReport:
    expert: str
    step: int  # optimiser steps done
    total_steps: int
    loss: float  # this step's loss (data-parallel: the mean over every rank's micro-batches)
    lr: float  # the learning rate the step used
    seconds: float  # wall time of the step, all its micro-batches


@dataclass
class ExpertResult:
    expert: str
    lora_path: Path
    steps: int
    final_loss: float | None
    skipped: bool = False  # already trained: nothing was done


class StopTraining(Exception):
    """Raised by a step or epoch-end callback to stop there (the state is saved first)."""


StepCallback = Callable[[StepReport], None]
EpochCallback = Callable[[str, int, torch.nn.Module], None]


def chain(*callbacks: Callable | None) -> Callable | None:
    """One callback that calls each given one in order, with the same arguments (None given
    for all of them: None). For several listeners on on_step or on_epoch_end."""
    chosen = [c for c in callbacks if c is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def call_each(*args) -> None:
        for callback in chosen:
            callback(*args)

    return call_each
