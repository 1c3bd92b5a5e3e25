"""`wanlora inspect timesteps` and `wanlora inspect schedule`: what training will draw and use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from ..errors import WanloraError
from ..recipes import RecipeConfig, load_project, load_recipe
from .app import console, inspect_app

if TYPE_CHECKING:
    import torch

# torch and transformers are imported inside the commands: every other `wanlora` command
# would otherwise pay their import time at start-up.

# The recipe's run: 18 images x 1 repeat, batch 1, 100 epochs.
DEFAULT_STEPS = 1800
SPARK_CHARS = "▁▂▃▄▅▆▇█"

RECIPE_OPTION = typer.Option("wan22-t2v", "--recipe", "-r", help="Recipe preset.")
PROJECT_OPTION = typer.Option(
    None, "--project", "-p", help="Project folder (its config replaces --recipe)."
)
JSON_OPTION = typer.Option(False, "--json", help="Machine-readable output.")


def _config(recipe: str, project: Path | None) -> RecipeConfig:
    return load_project(project).config if project is not None else load_recipe(recipe)


@inspect_app.command("timesteps")
def inspect_timesteps(
    recipe: str = RECIPE_OPTION,
    expert: str = typer.Option(None, "--expert", "-e", help="Expert, e.g. high or low."),
    n: int = typer.Option(100_000, "-n", min=1, help="Number of samples."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: the recipe's)."),
    project: Path = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The distribution of training timesteps t for one expert (t=0 clean, t=1 noise)."""
    import torch

    from ..train.timesteps import dit_timestep, sample_timesteps, summarize_timesteps

    config = _config(recipe, project)
    expert = expert or next(iter(config.experts))
    if expert not in config.experts:
        raise WanloraError(
            f"unknown expert '{expert}' for recipe '{config.recipe}'",
            f"use one of: {', '.join(config.experts)}",
        )
    settings = config.experts[expert]
    generator = torch.Generator().manual_seed(config.training.seed if seed is None else seed)
    t = sample_timesteps(
        n, config.timesteps, settings.min_timestep, settings.max_timestep, generator=generator
    )
    summary = {"expert": expert, "n": n, **summarize_timesteps(t)}
    if config.task == "ti2v-5B":  # per-token timesteps: train/ti2v.py
        summary["ti2v_i2v_share"] = config.training.ti2v_i2v_share
    if as_json:
        typer.echo(json.dumps(summary))
        return

    ts = config.timesteps
    range_text = f"{settings.min_timestep}-{settings.max_timestep}"
    how = (
        "full range"
        if (settings.min_timestep, settings.max_timestep) == (0, 1000)
        else "truncated (redrawn into range)"
        if ts.preserve_distribution_shape
        else "squeezed linearly into range"
    )
    console.print(
        Text.assemble(
            (config.recipe, "bold"),
            " expert ",
            (expert, "bold"),
            f": timesteps {range_text}, sampling {ts.timestep_sampling} "
            f"(shift {ts.discrete_flow_shift:g}, sigmoid_scale {ts.sigmoid_scale:g}), {how}; n={n}",
        )
    )
    lo, hi = settings.min_timestep / 1000, settings.max_timestep / 1000
    for line in histogram_lines(t, lo, hi):
        console.print(line, highlight=False)
    table = Table("quantile", "t", "DiT timestep", box=None)
    for q, value in summary["quantiles"].items():
        table.add_row(q, f"{value:.4f}", f"{float(dit_timestep(torch.tensor(value))):.1f}")
    table.add_row("mean", f"{summary['mean']:.4f}", "")
    console.print(table)
    console.print("The DiT receives 1000*t + 1 (the reference's +1).", style="dim")
    if config.task == "ti2v-5B":
        console.print(
            f"TI2V-5B: one model over all timesteps; {config.training.ti2v_i2v_share:.0%} of "
            "video clips train image-to-video, the tokens of their first latent frame (the "
            "clean image) at timestep 0.",
            style="dim",
        )


def histogram_lines(
    t: torch.Tensor, lo: float, hi: float, bins: int = 20, width: int = 50
) -> list[str]:
    """A text histogram of t over [lo, hi]: one line per bin, bar length ~ share of samples."""
    import torch

    counts = torch.histc(t.float(), bins=bins, min=lo, max=hi)
    shares = counts / counts.sum()
    peak = float(shares.max()) or 1.0
    edges = torch.linspace(lo, hi, bins + 1).tolist()
    return [
        f"{edges[i]:.3f}-{edges[i + 1]:.3f} {'█' * round(width * float(s) / peak):<{width}} "
        f"{100 * float(s):5.1f}%"
        for i, s in enumerate(shares)
    ]


@inspect_app.command("schedule")
def inspect_schedule(
    recipe: str = RECIPE_OPTION,
    steps: int = typer.Option(
        None,
        "--steps",
        min=1,
        help="Optimiser steps (default 1800; with --project: epochs x steps per epoch).",
    ),
    project: Path = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The learning rate of every optimiser step."""
    from ..train.schedule import lr_schedule, min_lr_ratio_note, total_training_steps

    if project is not None:
        loaded = load_project(project)
        config = loaded.config
        total = steps or total_training_steps(loaded)
    else:
        config = load_recipe(recipe)
        total = steps or DEFAULT_STEPS
    lrs = lr_schedule(config.scheduler, config.optimizer.learning_rate, total)
    if as_json:
        typer.echo(json.dumps({"steps": total, "lr": lrs}))
        return

    sched = config.scheduler
    shape = (
        f"polynomial power {sched.lr_scheduler_power:g}, lr_end {sched.lr_end:g}"
        if sched.lr_scheduler == "polynomial"
        else sched.lr_scheduler
    )
    console.print(
        Text.assemble(
            (config.recipe, "bold"),
            f": lr {config.optimizer.learning_rate:g}, {shape}, "
            f"warmup {sched.lr_warmup_steps}, {total} steps",
        )
    )
    console.print(sparkline(lrs), highlight=False)
    table = Table("step", "lr", box=None)
    for step in selected_steps(total):
        table.add_row(str(step), f"{lrs[step]:.4e}")
    console.print(table)
    note = min_lr_ratio_note(sched)
    if note:
        console.print(f"note: {note}", style="yellow", highlight=False)


def selected_steps(total: int) -> list[int]:
    """First, last, and every tenth of the run (deduplicated, in order)."""
    picks = {0, total - 1, *(round(total * k / 10) for k in range(1, 10))}
    return sorted(s for s in picks if 0 <= s < total)


def sparkline(values: list[float], width: int = 60) -> str:
    """One line of block characters: the lr over the run, left to right, scaled to its max."""
    if not values:
        return ""
    top = max(values) or 1.0
    columns = min(width, len(values))
    picks = [values[i * len(values) // columns] for i in range(columns)]
    return "".join(
        SPARK_CHARS[min(len(SPARK_CHARS) - 1, int(v / top * len(SPARK_CHARS)))] for v in picks
    )
