"""SIGINT (Ctrl-C) and SIGTERM (a preempted cloud machine) during `wanlora train`.

The first signal asks the run to stop at the next optimiser step: the step callback raises
StopTraining there, and the loop saves its state at exactly the point a periodic save would
(the same data position, random streams, optimiser and schedule), so the resumed run gives
the LoRA an uninterrupted run gives. Before the first step (caching, loading the model)
there is nothing to save: the signal stops the run at once (cache entries are written
atomically, a half-done one is simply made again). A second signal aborts at once; every
file is written atomically, so nothing is corrupted, and the last saved state resumes.

`Interrupted` is not a KeyboardInterrupt on purpose: click (under typer) swallows
KeyboardInterrupt before our CLI could say what was saved and how to resume.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..train.callbacks import StepCallback, StepReport, StopTraining

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number


class Interrupted(Exception):
    """The run stopped on a signal; `state_dir` is the state it saved (None: nothing new)."""

    def __init__(self, signum: int, *, expert: str | None = None, step: int | None = None,
                 state_dir: Path | None = None, aborted: bool = False):  # fmt: skip
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.expert, self.step, self.state_dir, self.aborted = expert, step, state_dir, aborted

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 130)


@dataclass
class StopRequest:
    """What the handlers saw: the first signal's number, and whether steps have begun."""

    signum: int | None = None
    stepping: bool = False
    last: StepReport | None = None  # the last completed step: where a stop saves

    def step_callback(self, inner: StepCallback | None) -> StepCallback:
        """`inner` (progress bars), then a stop at this step if a signal asked for one."""

        def on_step(report: StepReport) -> None:
            self.stepping, self.last = True, report
            if inner is not None:
                inner(report)
            if self.signum is not None:
                raise StopTraining(f"stopped by {signal.Signals(self.signum).name}")

        return on_step


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the two-stage SIGINT/SIGTERM handlers for the body (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be set from the main thread
        return

    def handle(signum, _frame):
        if request.signum is not None:  # the second signal: stop now
            raise Interrupted(signum, aborted=True)
        request.signum = signum
        if not request.stepping:  # caching or loading: nothing to save yet
            raise Interrupted(signum)
        log.warning(
            "%s: stopping after the current step and saving its state "
            "(press Ctrl-C again to stop at once)",
            signal.Signals(signum).name,
        )

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield request
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
