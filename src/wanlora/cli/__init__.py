"""The `wanlora` command: a thin shell over library functions (one module per command group)."""

from . import (
    caption_cmds,  # noqa: F401  (caption)
    dataset_cmds,  # noqa: F401  (check)
    export_cmds,  # noqa: F401  (export musubi)
    project_cmds,  # noqa: F401  (registers commands)
    sample_cmds,  # noqa: F401  (sample, report)
    setup_cmds,  # noqa: F401  (download, doctor)
    train_cmds,  # noqa: F401  (cache, train, demo)
    train_inspect_cmds,  # noqa: F401  (inspect timesteps|schedule)
)
from .app import app, main

__all__ = ["app", "main"]
