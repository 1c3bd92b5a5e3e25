"""The callbacks the run layer builds and passes into the training loop.

The loop (wanlora.train.loop) reports steps and epoch ends and knows nothing of who
listens; here are the listeners a run attaches besides the CLI's progress bar:

- LossLog: loss, lr and the step's measured time (perf/step_seconds) per step into
  TensorBoard (output/logs/<expert>), by the process that writes the run's files
- epoch_monitor: a TrainingMonitor (wanlora.sampling.epoch_samples) at epoch ends: memory
  numbers, the [sample] images
- StepPrinter: one line per step at most every 10 s, for launches without a terminal UI
- ValidationMonitor (validation.py): validation loss and LoRA effect at epoch ends
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from ..recipes import Project
from ..sampling.epoch_samples import TrainingMonitor
from ..train.callbacks import StepReport


def summary_writer(log_dir: Path):
    """A TensorBoard SummaryWriter on `log_dir`, or None without tensorboard."""
    try:  # optional dependency: imported only when a run logs
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))


class LossLog:
    """on_step: loss, lr and the step's own wall time at each step into a TensorBoard folder,
    made at the first step (nothing without tensorboard, an optional dependency). The step
    time is what the loop measured around the step, so the report's s/step leaves out what
    happens between steps: a pause before a resume, sampling at an epoch end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.writer = None
        self._tried = False

    def __call__(self, report: StepReport) -> None:
        if not self._tried:
            self._tried = True
            self.writer = summary_writer(self.log_dir)
        if self.writer is not None:
            self.writer.add_scalar("loss", report.loss, report.step)
            self.writer.add_scalar("lr", report.lr, report.step)
            self.writer.add_scalar("perf/step_seconds", report.seconds, report.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> LossLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def epoch_monitor(project: Project, device: torch.device, on: bool, *, render_base: bool = True):
    """The on_epoch_end callback of a worker or launch: a TrainingMonitor when `on`, else
    None. The other ranks of a data-parallel group wait at the next all_reduce while rank 0
    samples."""
    if not on:
        yield None
        return
    monitor = TrainingMonitor(project, device, render_base=render_base)
    try:
        yield monitor
    finally:
        monitor.close()


class StepPrinter:
    """on_step: `high 12/1800 loss 0.1234 lr 1.00e-04 0.52 s/step`, at most every `every` s
    (and always the first and last step)."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self._last = 0.0

    def __call__(self, report: StepReport) -> None:
        now = time.monotonic()
        if now - self._last >= self.every or report.step in (1, report.total_steps):
            self._last = now
            print(
                f"{report.expert} {report.step}/{report.total_steps} loss {report.loss:.4f} "
                f"lr {report.lr:.2e} {report.seconds:.2f} s/step",
                flush=True,
            )
