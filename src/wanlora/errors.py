"""The one exception type users see.

Every failure a user can fix is raised as `WanloraError(what, fix)`; the CLI prints it as a
single line (no traceback unless --debug) and exits non-zero.
"""

from __future__ import annotations


class WanloraError(Exception):
    """A problem the user can fix: what went wrong, and what to do about it."""

    exit_code = 1  # the CLI's exit status for it (2: a refusal the user must decide on)

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(what if not fix else f"{what} -- {fix}")

    def one_line(self) -> str:
        return str(self)
