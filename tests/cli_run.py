"""Run the real `wanlora` CLI in a fresh interpreter, as a user's shell would."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout: float = 240):
    """`wanlora ARGS...` -> CompletedProcess (text stdout/stderr); env adds to os.environ."""
    return subprocess.run(
        [sys.executable, "-c", "from wanlora.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )
