"""The `wanlora` command: a thin shell over library functions (one module per command group)."""

from . import project_cmds  # noqa: F401  (registers commands)
from .app import app, main

__all__ = ["app", "main"]
