"""SIGINT (Ctrl-C) and SIGTERM (a preempted cloud machine) during `wanlora train`.

What the first signal does depends on the phase the run is in (`StopRequest.phase`):

    starting   caching, loading a model, the first step's micro-batches: nothing to save,
               so `Interrupted` is raised at once (cache entries are written atomically; a
               half-done one is made again on the next run)
    stepping   the optimiser steps: the run stops at the next step (the step callback
               raises StopTraining there; mid gradient accumulation that is the end of the
               accumulation) and the loop saves its state exactly as a periodic save would;
               a state save in progress finishes first (it is not interrupted)
    sampling   the epoch-end callback (samples): stopped at once with StopTraining; the
               loop saves the epoch's state, which sampling does not change
    relaying   the parent of worker processes (workers.py): it records the signal and
               forwards it to the workers, which stop at their next step

A second signal aborts at once (`Interrupted(aborted=True)`): every file is written
atomically, so nothing is corrupted, and the last saved state resumes. Workers do not abort
on a second signal (the parent forwards the terminal's Ctrl-C, which the workers also
receive themselves); the parent aborts them with SIGKILL.

One signal can arrive twice: GNU `timeout` (and a kill of the process group) sends it to
the process and again to its group, microseconds apart, often while the first handler is
still running. A repeat of the same signal that comes inside the first handler, or in the
same interrupted frame within REPEAT_SECONDS with the run at the same step and phase, is the
same request; any other repeat is a second signal. And if an abort does not end the run
(an exception raised at an arbitrary point can be swallowed, e.g. by torch.compile's
"suppressing" of a failed backward compile), the process exits by itself
ABORT_GRACE_SECONDS later instead of hanging: the lock of a dead process is stale, and
every file was written atomically.

`Interrupted` is not a KeyboardInterrupt on purpose: click (under typer) swallows
KeyboardInterrupt before our CLI could say what was saved and how to resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..train.callbacks import EpochCallback, StepCallback, StepReport, StopTraining

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number
STARTING, STEPPING, SAMPLING, RELAYING = "starting", "stepping", "sampling", "relaying"
REPEAT_SECONDS = 0.5  # a repeat of the first signal sooner, with no progress: the same one
ABORT_GRACE_SECONDS = 30.0  # an abort that has not ended the run by then exits the process


@dataclass(frozen=True)
class Saved:
    """One expert's resume state on disk: its step, its folder, whether the run finished."""

    expert: str
    step: int
    state_dir: Path
    finished: bool = False


class Interrupted(Exception):
    """The run stopped on a signal. `stopped`: the states saved at the stop (one per expert
    that was stepping); `kept`: every expert's newest state on disk (what resumes)."""

    def __init__(self, signum: int, *, stopped: tuple[Saved, ...] = (), aborted: bool = False,
                 kept: tuple[Saved, ...] = ()):  # fmt: skip
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stopped, self.aborted, self.kept = signum, tuple(stopped), aborted, kept

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 130)

    # the first stopped expert, for one-process runs (one expert steps at a time)
    @property
    def expert(self) -> str | None:
        return self.stopped[0].expert if self.stopped else None

    @property
    def step(self) -> int | None:
        return self.stopped[0].step if self.stopped else None

    @property
    def state_dir(self) -> Path | None:
        return self.stopped[0].state_dir if self.stopped else None

    def message(self) -> str:
        """What was saved, in one line (the CLI adds the command that resumes)."""
        head = f"interrupted ({self}):"
        if self.stopped:
            return head + " " + "; ".join(
                f"{s.expert} stopped after step {s.step}, its state is saved in {s.state_dir}"
                for s in self.stopped
            )
        if self.aborted:
            what = "stopped at once (second signal)"
        else:
            what = "stopped before the first step (caching or loading): nothing to save"
        kept = [s for s in self.kept if not s.finished]
        done = [s.expert for s in self.kept if s.finished]
        parts = [what]
        if kept:
            parts.append(
                "the last saved state resumes: "
                + ", ".join(f"{s.expert} at step {s.step} in {s.state_dir}" for s in kept)
            )
        if done:
            parts.append(f"{' and '.join(done)} already trained")
        parts.append("the cache entries written so far are kept")
        return f"{head} {'; '.join(parts)}"


@dataclass
class StopRequest:
    """What the handlers saw (the first signal's number) and the phase the run is in."""

    signum: int | None = None
    phase: str = STARTING
    last: StepReport | None = None  # the last completed step: where a stop saves
    seen: list[int] = field(default_factory=list)  # every signal received, in order

    def step_callback(self, inner: StepCallback | None, *, stops: bool = True) -> StepCallback:
        """`inner` (progress bars), then a stop at this step if a signal asked for one.
        `stops=False`: the strategy decides (data-parallel ranks agree on the step)."""

        def on_step(report: StepReport) -> None:
            self.phase, self.last = STEPPING, report
            if inner is not None:
                inner(report)
            if stops and self.signum is not None:
                raise StopTraining(f"stopped by {signal.Signals(self.signum).name}")

        return on_step

    def epoch_callback(self, inner: EpochCallback | None, *, stops: bool = True) -> EpochCallback | None:
        """`inner` (samples) as a phase a signal stops at once: the epoch's state is saved.
        `stops=False` (data-parallel rank 0: the others wait in the next step's all_reduce):
        sampling finishes and the ranks stop together at the next step."""
        if inner is None or not stops:
            return inner

        def on_epoch_end(*args) -> None:
            if self.signum is not None:  # asked at the epoch's last step: no samples now
                raise StopTraining(f"stopped by {signal.Signals(self.signum).name}")
            self.phase = SAMPLING
            try:
                inner(*args)
            finally:
                if self.phase == SAMPLING:
                    self.phase = STEPPING

        return on_epoch_end

    def expert_done(self) -> None:
        """An expert finished: the next one's caching and loading stop at once again."""
        self.phase, self.last = STARTING, None


@contextlib.contextmanager
def stop_on_signals(*, second_aborts: bool = True) -> Iterator[StopRequest]:
    """Install the phase-aware SIGINT/SIGTERM handlers for the body (main thread only).
    `second_aborts=False` in worker processes: a repeat is the parent's forward."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be set from the main thread
        return

    first: dict = {}  # the first signal: when, and where the run was
    watchdog: list[threading.Timer] = []

    def handle(signum, frame):
        request.seen.append(signum)
        if request.signum is not None:
            phase, last = first["at"]
            same = signum == request.signum and request.phase == phase and request.last is last
            # a twin arrives inside the first handler, or before the interrupted code went on
            # (the same frame: a signal sent from another call, e.g. the next micro-batch, is
            # a second one however soon it comes)
            soon = frame is first["frame"] and time.monotonic() - first["time"] < REPEAT_SECONDS
            if same and (first["busy"] or soon):
                return  # one signal delivered twice (`timeout`, a process-group kill)
            if second_aborts:  # the second signal: stop now
                watchdog.append(_exit_later(EXIT_CODES.get(request.signum, 130)))
                raise Interrupted(request.signum, aborted=True)
            return
        request.signum = signum
        first.update(time=time.monotonic(), at=(request.phase, request.last), busy=True,
                     frame=frame)  # fmt: skip
        try:
            _first_signal(request, signum)
        finally:  # where the first one left the run (sampling turns into stepping)
            first.update(at=(request.phase, request.last), busy=False)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield request
    finally:
        for timer in watchdog:  # the abort reached here: the run ended as it should
            timer.cancel()
        first.clear()  # the interrupted frame, kept for the comparison
        for s, old in previous.items():
            signal.signal(s, old)


def _exit_later(code: int) -> threading.Timer:
    """A daemon timer that ends the process unless cancelled (an abort that got stuck)."""

    def stuck() -> None:
        os.write(2, b"wanlora: the abort did not end the run; exiting now\n")
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(ABORT_GRACE_SECONDS, stuck)
    timer.daemon = True
    timer.start()
    return timer


def _first_signal(request: StopRequest, signum: int) -> None:
    """What the first signal does in the run's current phase (see the module docstring)."""
    if request.phase == STARTING:  # caching or loading: nothing to save yet
        raise Interrupted(signum)
    if request.phase == SAMPLING:  # the epoch's state is whole: save it and stop
        request.phase = STEPPING
        raise StopTraining(f"stopped by {signal.Signals(signum).name}")
    if request.phase == STEPPING:
        log.warning(
            "%s: stopping after the current step and saving its state "
            "(press Ctrl-C again to stop at once)",
            signal.Signals(signum).name,
        )


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held back (not lost) for the body: a process started inside
    inherits the mask and receives them once it unblocks (`unblock_signals`), after its
    handlers are installed, instead of dying half-imported."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
