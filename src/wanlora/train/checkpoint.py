"""Saving one expert's run: resume states along the way, the LoRA file at the end.

Only the process whose strategy `writes_files` writes anything (rank 0 of a data-parallel
run); the others call the same methods, which then do nothing, so the loop reads the same
in every process. The state is always saved before the LoRA file: a kill in between
resumes from the finished state and writes the LoRA.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..lora.file import save_lora_file
from ..lora.inject import lora_state_dict
from .state import TrainingParts, TrainState, clear_states, save_state


class Checkpointer:
    def __init__(
        self,
        output_dir: Path,
        expert: str,
        parts: TrainingParts,
        *,
        alpha: float,
        writes: bool = True,
    ):
        self.output_dir, self.expert, self.parts, self.alpha = output_dir, expert, parts, alpha
        self.writes = writes
        self._saved: tuple[int, bool] | None = None  # (step, finished) of the last save

    def clear(self) -> None:
        """A fresh start (--restart, --overwrite): an earlier run's states go."""
        if self.writes:
            clear_states(self.output_dir, self.expert)

    def save(self, state: TrainState, *, finished: bool) -> None:
        """A resume state: the LoRA in float32, optimiser, schedule, loss scale, RNGs."""
        if not self.writes or self._saved == (state.step, finished):
            return  # e.g. a stop right after a periodic save: that state is this one
        state.finished = finished
        p = self.parts
        tensors = lora_state_dict(p.model, self.alpha, torch.float32)
        save_state(
            self.output_dir,
            self.expert,
            state,
            tensors,
            p.optimizer,
            p.scheduler,
            p.scaler,
            p.generator,
        )
        self._saved = (state.step, finished)

    def finish(
        self, state: TrainState, path: Path, dtype: torch.dtype, metadata: dict[str, str]
    ) -> None:
        """The end of a run: the finished state, then the LoRA file (in `dtype`, atomic)."""
        tensors = lora_state_dict(self.parts.model, self.alpha, dtype)
        self.save(state, finished=True)  # first: a kill before the LoRA resumes to write it
        if self.writes:
            save_lora_file(path, tensors, metadata)
