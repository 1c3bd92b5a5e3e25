"""`wanlora caption`: per-image captions, and `--review` to read them beside their images."""

from __future__ import annotations

import contextlib
import enum
import logging
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..captioning import caption_dataset, caption_prompt, review_pairs
from ..captioning.openai_backend import DEFAULT_BASE_URL, DEFAULT_MODEL, OpenAIBackend
from ..recipes import PROJECT_FILE
from ..run.lock import project_lock
from .app import app, console, err_console, styled


class Backend(str, enum.Enum):
    openai = "openai"
    local = "local"


@app.command()
def caption(
    directory: Path = typer.Argument(Path("."), help="Project folder (or a folder of images)."),
    backend: Backend = typer.Option(
        Backend.openai,
        "--backend",
        "-b",
        help="openai: any OpenAI-compatible API; local: on your GPU.",
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help=f"openai: model name (default {DEFAULT_MODEL}); local: hub id in your HF cache or "
        "a folder (default Qwen/Qwen2.5-VL-7B-Instruct).",
    ),
    base_url: str = typer.Option(
        DEFAULT_BASE_URL, "--base-url", envvar="OPENAI_BASE_URL", help="openai: API base URL."
    ),
    style_tag: str = typer.Option(
        None, "--style-tag", help="Phrase every caption starts with (default: project trigger)."
    ),
    style_traits: str = typer.Option(
        None,
        "--style-traits",
        help="The style's visual traits, e.g. 'thick outlines, flat colours'.",
    ),
    prompt_file: Path = typer.Option(
        None,
        "--prompt-file",
        help="Your own prompt; {style_phrase} and {style_traits} are filled in.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo existing captions (old ones are kept as .bak)."
    ),
    retries: int = typer.Option(2, "--retries", min=0, help="New tries for an unusable caption."),
    review: bool = typer.Option(
        False, "--review", help="Only show images and captions side by side."
    ),
    show_prompt: bool = typer.Option(False, "--show-prompt", help="Only print the prompt."),
) -> None:
    """Write a caption beside each image that has none, one request per image."""
    if review:
        _print_review(directory)
        return
    if show_prompt:
        typer.echo(caption_prompt(directory, style_tag, style_traits, prompt_file)[1])
        return
    caption_prompt(directory, style_tag, style_traits, prompt_file)  # fail before loading a model
    # huggingface_hub's HTTP client logs every request at INFO; that would break the bar
    logging.getLogger("httpx2").setLevel(logging.WARNING)

    if backend is Backend.local:
        from ..captioning.local_backend import LocalVLMBackend  # torch: only when asked for

        engine = LocalVLMBackend(model)
    else:
        engine = OpenAIBackend(model, base_url)

    columns = (TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # a project's captions must not change under a running `wanlora train`: take its lock
    is_project = (Path(directory) / PROJECT_FILE).is_file()
    lock = project_lock(Path(directory), "caption") if is_project else contextlib.nullcontext()
    try:
        with lock, Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("captioning", total=None)

            def on_progress(done: int, total: int, image: Path | None) -> None:
                bar.update(task, completed=done, total=total)

            summary = caption_dataset(
                directory,
                engine,
                overwrite=overwrite,
                style_tag=style_tag,
                style_traits=style_traits,
                prompt_file=prompt_file,
                retries=retries,
                on_progress=on_progress,
            )
    finally:
        engine.close()

    console.print(
        f"captioned {len(summary.written)}, skipped {len(summary.skipped)} (already captioned), "
        f"backed up {len(summary.backups)}, warnings {len(summary.warnings)}, "
        f"failed {len(summary.failed)}",
        highlight=False,
    )
    for image, warning in summary.warnings:
        console.print(styled("warning:", "yellow"), f"{image.name}: {warning}", highlight=False)
    for image, reason in summary.failed:
        err_console.print(styled("not captioned:", "red"), f"{image}: {reason}", highlight=False)
    if summary.failed:
        # Exit 1 although most images were captioned (and those captions are kept): a script
        # running `wanlora caption && wanlora train` must stop here, since training needs a
        # caption for every image. Rerunning captions only the images still without one.
        err_console.print(
            f"{len(summary.failed)} image(s) not captioned (listed above): fix them or caption "
            "them by hand, or run the command again to retry only those"
        )
        raise typer.Exit(1)


def _print_review(directory: Path) -> None:
    table = Table(show_lines=True)
    table.add_column("image", no_wrap=True)
    table.add_column("caption")
    for image, text in review_pairs(directory):
        table.add_row(image.name, text if text is not None else styled("(no caption)", "red"))
    console.print(table)
