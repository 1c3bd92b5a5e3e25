"""One signal delivered twice is one request; a stuck abort still ends the process.

GNU `timeout` sends its signal to the process and again to the process group: the handler
sees two SIGTERMs microseconds apart, the second often while the first is still logging.
Counted as "a second signal", that aborted the run mid-step (an exception raised inside the
logging module's lock, which deadlocked the next log call) instead of the graceful stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from wanlora.run.signals import STEPPING, Interrupted, stop_on_signals
from wanlora.train.callbacks import StepReport

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def report(step: int) -> StepReport:
    return StepReport("high", step, 10, 1.0, 1e-4, 0.1)


def test_the_same_signal_twice_at_once_is_one_request_to_stop_after_the_step():
    with stop_on_signals() as request:
        request.phase, request.last = STEPPING, report(1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # what `timeout` does: process, then group
        time.sleep(0.01)  # both handled
    assert request.seen == [signal.SIGTERM, signal.SIGTERM]
    assert request.signum == signal.SIGTERM  # the run stops after its step: not aborted


def test_a_repeat_after_the_run_moved_on_aborts():
    with pytest.raises(Interrupted) as stopped, stop_on_signals() as request:
        request.phase, request.last = STEPPING, report(1)
        os.kill(os.getpid(), signal.SIGINT)
        request.last = report(2)  # another step was reported: a deliberate second Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    assert stopped.value.aborted and stopped.value.signum == signal.SIGINT


def test_a_repeat_after_a_pause_aborts_even_mid_step(monkeypatch):
    monkeypatch.setattr("wanlora.run.signals.REPEAT_SECONDS", 0.05)
    with pytest.raises(Interrupted) as stopped, stop_on_signals() as request:
        request.phase, request.last = STEPPING, report(1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # a long step: the user presses Ctrl-C again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    assert stopped.value.aborted


def test_an_abort_that_something_swallows_still_ends_the_process():
    script = textwrap.dedent(
        """
        import os, signal, time
        import wanlora.run.signals as signals
        signals.ABORT_GRACE_SECONDS = 0.5
        signals.REPEAT_SECONDS = 0.0
        with signals.stop_on_signals() as request:
            request.phase = signals.STEPPING
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            request.phase = signals.SAMPLING  # moved on: the next one is a second signal
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
            except signals.Interrupted:
                pass  # swallowed, as torch.compile can swallow it
            time.sleep(30)  # stuck: the watchdog must end it
        """
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 143, result.stderr
    assert "the abort did not end the run; exiting now" in result.stderr
    assert time.monotonic() - started < 20
