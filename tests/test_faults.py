"""The fault hooks' rules, and the signals they send (in a child process, the real kernel)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from wanlora import faults


def test_rules_parse_every_action():
    spec = "step:20:sigint, state_write:2:sigterm, atomic_write[*Noise*]:1, cache_write:3:oom"
    assert faults._parse(spec) == [
        ("step", None, 20, "sigint"),
        ("state_write", None, 2, "sigterm"),
        ("atomic_write", "*Noise*", 1, "kill"),
        ("cache_write", None, 3, "oom"),
    ]


@pytest.mark.parametrize("rule", ["step:1:sighup", "step:sigint", "step:1:SIGINT", "step"])
def test_a_bad_rule_names_the_actions(rule):
    with pytest.raises(ValueError, match=r"bad rule .*kill\|enospc\|oom\|sigint\|sigterm"):
        faults._parse(rule)


def child(body: str, rule: str) -> subprocess.CompletedProcess:
    script = "import signal, sys\nfrom wanlora import faults\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, faults.ENV: rule},
        timeout=60,
    )


def test_sigterm_ends_the_process_at_the_nth_point():
    result = child(
        """
        for i in range(1, 4):
            print("step", i, flush=True)
            faults.point("step")
        print("not reached", flush=True)
        """,
        "step:2:sigterm",
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stdout.split("\n")[:-1] == ["step 1", "step 2"]


def test_sigint_reaches_the_handler_and_point_returns():
    result = child(
        """
        signal.signal(signal.SIGINT, lambda sig, frame: print("handler", sig, flush=True))
        for i in range(1, 4):
            faults.point("step")
            print("after step", i, flush=True)
        """,
        "step:2:sigint",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == [
        "after step 1",
        f"handler {int(signal.SIGINT)}",
        "after step 2",
        "after step 3",
    ]


def test_sigint_with_the_default_handler_is_a_keyboard_interrupt():
    result = child(
        """
        try:
            for i in range(1, 4):
                faults.point("step", f"/out/step-{i}")
        except KeyboardInterrupt:
            print("KeyboardInterrupt at", i)
        """,
        "step[*step-3]:1:sigint",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "KeyboardInterrupt at 3\n"
