"""`wanlora export musubi`: the project as the recipe's original musubi-tuner workflow."""

from __future__ import annotations

from pathlib import Path

import typer

from ..export.musubi import musubi_export, write_musubi_export
from ..recipes import load_project
from .app import app, err_console

export_app = typer.Typer(help="Export a project to other trainers.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("musubi")
def export_musubi(directory: Path = typer.Argument(Path("."), help="Project folder.")) -> None:
    """Print the musubi-tuner commands and dataset.toml, and write them to DIR/export/musubi/."""
    project = load_project(directory)
    export = musubi_export(project)
    folder = write_musubi_export(project)
    # stdout stays a runnable script: the dataset.toml it uses follows as a comment
    toml_lines = "".join(f"# {line}".rstrip() + "\n" for line in export.dataset_toml.splitlines())
    typer.echo(f"{export.script}\n# --- {folder / 'dataset.toml'} ---\n{toml_lines}", nl=False)
    written = ", ".join(str(folder / name) for name in ["dataset.toml", *export.video_lists])
    err_console.print(f"wrote {written} and {folder / 'run.sh'}", highlight=False, soft_wrap=True)
