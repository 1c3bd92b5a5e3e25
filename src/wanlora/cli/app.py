"""The `wanlora` Typer app, global options, and the one place errors become one line."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from ..errors import WanloraError

app = typer.Typer(
    name="wanlora",
    help="Train Wan 2.2 LoRAs with the AI_Characters recipe, start to finish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
inspect_app = typer.Typer(help="Show what a recipe or project will do.", no_args_is_help=True)
app.add_typer(inspect_app, name="inspect")

console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More log output."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if (verbose or debug) else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "PIL", "matplotlib", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    """Entry point: run the app; a WanloraError is one red line and exit code 1."""
    try:
        app()
    except WanloraError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/] (run the same command again to resume)")
        sys.exit(130)
    except OSError as exc:  # disk full, permissions, a vanished file: name the file
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(
            f"[bold red]error:[/] {where}{exc.strerror or exc} -- fix the file or disk problem and run again",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except Exception as exc:  # a bug: one line here, the traceback with --debug
        if _state["debug"]:
            raise
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(exc, torch.OutOfMemoryError):  # not a bug
            from ..device_memory import out_of_memory_detail

            err_console.print(
                f"[bold red]error:[/] out of GPU memory ({out_of_memory_detail(exc)}) -- close other programs "
                "that use the GPU (`nvidia-smi` lists them) and run the same command again",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(1)
        err_console.print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {exc} -- this is a bug in wanlora; "
            "rerun with --debug and report the traceback",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
