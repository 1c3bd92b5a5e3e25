"""The `wanlora` Typer app, global options, and the one place errors become one line.

Output rules, for every command:
- Messages name TOML tables (`[sample]`, `[experts.low]`), so rich markup is off everywhere:
  the consoles print text as given (colour comes from `styled()` pieces), and typer's help
  is plain click help (rich help would also eat `[sample]` and print `<bool>` after flags).
- Piped output (not a terminal) is never wrapped: a path or command in it stays on one line,
  ready to copy or grep. On a terminal, long lines wrap where the terminal wraps them.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from ..errors import WanloraError
from ..recipes import NotAProjectFolder
from ..run.signals import Interrupted

app = typer.Typer(
    name="wanlora",
    help="Train Wan 2.2 LoRAs with the AI_Characters recipe, start to finish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
inspect_app = typer.Typer(
    help="Show what a recipe or project will do.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(inspect_app, name="inspect")

# Rich lays out tables and text to the console width; a pipe has none, so give it room
# enough that nothing is folded (rich would otherwise assume 80 columns).
PIPE_WIDTH = 100_000


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty()
    return Console(
        stderr=stderr, markup=False, soft_wrap=True, width=PIPE_WIDTH if piped else None
    )


console = _console(stderr=False)
err_console = _console(stderr=True)


def styled(text: str, style: str) -> Text:
    """A coloured piece of a message (markup is off: `[...]` in messages stays as written)."""
    return Text(text, style=style)


_state = {"debug": False}


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More log output."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if (verbose or debug) else logging.INFO
    if err_console.is_terminal:
        handler: logging.Handler = RichHandler(console=err_console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # a pipe or a log file: plain lines (rich would pad each to the console width)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "PIL", "matplotlib", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def corrected_command(exc: NotAProjectFolder, args: list[str]) -> str:
    """The user's command line with the project folder where the wrong folder was."""
    args = list(args)
    for i, arg in enumerate(args):
        if not arg.startswith("-") and Path(arg).expanduser().resolve() == exc.folder:
            args[i] = str(exc.project) if Path(arg).is_absolute() else os.path.relpath(exc.project)
            break
    else:  # the folder was the default "." (the command ran inside it)
        args.append(os.path.relpath(exc.project))
    return shlex.join(["wanlora", *args])


BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def flag_given_a_value(args: list[str]) -> str | None:
    """`--overwrite true`: a flag takes no value; say so instead of click's "unexpected extra
    argument (true)". A word that names an existing folder is left alone (a project)."""
    import typer.main

    flags: dict[str, str | None] = {}  # flag -> its off spelling (--sequential), if any
    stack = [typer.main.get_command(app)]
    while stack:
        command = stack.pop()
        stack += list(getattr(command, "commands", {}).values())
        for param in command.params:
            if getattr(param, "is_flag", False):
                off = (getattr(param, "secondary_opts", None) or [None])[0]
                flags.update(dict.fromkeys(param.opts, off))
    for flag, value in zip(args, args[1:], strict=False):
        if flag in flags and value.lower() in BOOL_WORDS and not Path(value).is_dir():
            on = value.lower() in {"true", "yes", "on", "1"}
            off = flags[flag]
            fix = f"write {flag} alone" if on else (f"write {off}" if off else "leave it out")
            return f"{flag} is a flag and takes no value (got `{flag} {value}`) -- {fix}"
    return None


def main() -> None:
    """Entry point: run the app; a WanloraError is one red line and its exit code (1, or 2 for a refused plan)."""
    problem = flag_given_a_value(sys.argv[1:])
    if problem is not None:
        err_console.print(styled("error:", "bold red"), problem, highlight=False)
        sys.exit(2)
    try:
        app(prog_name="wanlora")
    except WanloraError as exc:
        if _state["debug"]:
            raise
        if isinstance(exc, NotAProjectFolder):
            exc = WanloraError(exc.what, f"run `{corrected_command(exc, sys.argv[1:])}`")
        err_console.print(styled("error:", "bold red"), exc.one_line(), highlight=False)
        sys.exit(exc.exit_code)
    except Interrupted as exc:  # SIGINT / SIGTERM during `wanlora train` (run/signals.py)
        # the same command resumes; a flag that starts a new run would start yet another
        fresh = {"--new-run", "--overwrite", "--restart"}
        again = shlex.join(["wanlora", *(a for a in sys.argv[1:] if a not in fresh)])
        err_console.print(styled(exc.message(), "yellow"), highlight=False)
        err_console.print(f"resume with: {again}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print(
            styled("interrupted", "yellow"), "(run the same command again to resume)"
        )
        sys.exit(130)
    except OSError as exc:  # disk full, permissions, a vanished file: name the file
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(
            styled("error:", "bold red"),
            f"{where}{exc.strerror or exc} -- fix the file or disk problem and run again",
            highlight=False,
        )
        sys.exit(1)
    except Exception as exc:  # a bug: one line here, the traceback with --debug
        if _state["debug"]:
            raise
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(exc, torch.OutOfMemoryError):  # not a bug
            from ..device_memory import out_of_memory_detail

            err_console.print(
                styled("error:", "bold red"),
                f"out of GPU memory ({out_of_memory_detail(exc)}) -- close other programs "
                "that use the GPU (`nvidia-smi` lists them) and run the same command again",
                highlight=False,
            )
            sys.exit(1)
        err_console.print(
            styled("error:", "bold red"),
            f"unexpected {type(exc).__name__}: {exc} -- this is a bug in wanlora; "
            "rerun with --debug and report the traceback",
            highlight=False,
        )
        sys.exit(1)
