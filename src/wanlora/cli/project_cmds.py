"""`wanlora init` and `wanlora inspect recipe|config`."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import project_init
from ..recipes import config_to_toml, load_project, load_recipe, recipe_names
from .app import app, console, inspect_app, styled


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Project folder to create."),
    recipe: str = typer.Option("wan22-t2v", "--recipe", "-r", help="Recipe preset."),
    name: str = typer.Option(..., "--name", "-n", help="LoRA name, e.g. MyStyle_v1."),
    author: str = typer.Option(
        ..., "--author", "-a", help="Your name, for file names and metadata."
    ),
    trigger: str = typer.Option(
        None, "--trigger", help="Style/trigger phrase captions start with."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing wanlora.toml."),
) -> None:
    """Create a project folder: wanlora.toml and dataset/."""
    created = project_init.init_project(directory, recipe, name, author, trigger, force=force)
    console.print(styled("Created project", "green"), created.root)
    console.print(project_init.next_steps(created.root, created.config.dit_task == "i2v"))


@inspect_app.command("recipe")
def inspect_recipe(
    name: str = typer.Argument(..., help=f"One of: {', '.join(recipe_names())}"),
) -> None:
    """Print a recipe's full config as TOML."""
    typer.echo(config_to_toml(load_recipe(name)), nl=False)


@inspect_app.command("config")
def inspect_config(directory: Path = typer.Argument(Path("."), help="Project folder.")) -> None:
    """Print a project's merged config (recipe + wanlora.toml) as TOML."""
    typer.echo(config_to_toml(load_project(directory).config), nl=False)
