"""`wanlora cache`, `wanlora train`, `wanlora runs` and `wanlora demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..recipes import load_project
from .app import app, console, err_console, styled


def _device(name: str | None):
    import torch

    from ..cache.build import default_device

    return torch.device(name) if name else default_device()


@app.command()
def cache(
    directory: Path = typer.Argument(Path("."), help="Project folder."),
    device: str = typer.Option(None, help="cuda, cuda:1 or cpu (default: cuda if available)."),
    max_vram: float = typer.Option(
        None,
        "--max-vram",
        help="GiB of GPU memory to use (training.max_vram_gb; default: the card's free "
        "memory): a model that does not fit encodes on the CPU.",
    ),
) -> None:
    """Compute (or reuse) latents and text embeddings for every image and caption."""
    from ..cache.build import build_cache
    from ..run.lock import project_lock, remove_leftovers

    project = load_project(directory)
    apply_max_vram(project, max_vram)
    with project_lock(project.root, "cache"):
        remove_leftovers(project.root, project.output_dir, project.cache_dir)
        result = build_cache(project, device=_device(device))
    console.print(
        f"cache: latents {result.latents_computed} computed, {result.latents_reused} reused; "
        f"text {result.texts_computed} computed, {result.texts_reused} reused; "
        f"{len(result.removed)} stale removed -> {project.cache_dir}"
    )


@app.command()
def train(
    directory: Path = typer.Argument(Path("."), help="Project folder."),
    expert: list[str] = typer.Option(
        None, "--expert", "-e", help="Train only this expert (high, low; main: a one-model recipe)."
    ),
    new_run: bool = typer.Option(
        False,
        "--new-run",
        help="Start a new run from scratch, whatever changed (earlier runs are kept in "
        "output/runs/).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what training would do (the plan) and exit."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Deprecated: --new-run."),
    restart: bool = typer.Option(False, "--restart", help="Deprecated: --new-run."),
    device: str = typer.Option(None, help="cuda, cuda:1 or cpu (default: cuda if available)."),
    parallel_experts: bool = typer.Option(
        None,
        "--parallel-experts/--sequential",
        help="Train the two experts at the same time, one per GPU "
        "(default: yes when there is a GPU for each).",
    ),
    devices: str = typer.Option(
        None,
        help="Devices for the worker processes, e.g. cuda:0,cuda:1 (default: every visible GPU; "
        "cpu,cpu tries it on the CPU).",
    ),
    data_parallel: int = typer.Option(
        1,
        "--data-parallel",
        min=1,
        help="Train each expert over N processes (N GPUs): same epochs, N times fewer steps "
        "of N samples each (docs/multi_gpu.md).",
    ),
    max_vram: float = typer.Option(
        None,
        "--max-vram",
        help="GPU memory budget in GiB per training process (e.g. 24 for a 24 GB card): fp8 "
        "weight storage, recompute and (below ~16) blocks streamed from host memory are chosen to "
        "fit it, numerics unchanged "
        "(training.max_vram_gb; default: the card's free memory).",
    ),
) -> None:
    """Check the dataset, compare with the last run (the plan), (re)build caches, train."""
    for flag, given in (("--overwrite", overwrite), ("--restart", restart)):
        if given:  # both once meant a fresh start; a new run is that, keeping the old one
            err_console.print(
                f"{flag} is deprecated: it means --new-run now (earlier runs are kept)"
            )
    new_run = new_run or overwrite or restart
    project = load_project(directory)
    apply_max_vram(project, max_vram)
    if dry_run:
        _print_plan_only(project, expert or None, new_run)
        return
    _train_with_progress(
        project,
        experts=expert or None,
        device=_device(device) if device else None,
        new_run=new_run,
        devices=[d.strip() for d in devices.split(",") if d.strip()] if devices else None,
        parallel_experts=parallel_experts,
        data_parallel=data_parallel,
    )


def apply_max_vram(project, max_vram: float | None) -> None:
    """`--max-vram GB` onto the project's training settings (a positive number of GiB)."""
    if max_vram is None:
        return
    if not max_vram > 0:  # also NaN
        from ..errors import WanloraError

        raise WanloraError(
            f"--max-vram must be a positive number of GiB (got {max_vram})",
            "e.g. --max-vram 24 for a 24 GB card, or leave it out to use the card's free memory",
        )
    project.config.training.max_vram_gb = max_vram


def _print_plan_only(project, experts, new_run: bool) -> None:
    """`--dry-run`: the plan, nothing written (not even the lock)."""
    from ..run.checks import check_dataset_clean
    from ..run.plan import make_plan

    check_dataset_clean(project)
    plan = make_plan(project, experts, new_run=new_run)
    _print_plan(project, plan)
    if plan.action == "refuse":
        console.print(f"`wanlora train` would stop here (exit 2): {plan.refusal(project)}")
    console.print("dry run: nothing was changed")


def _print_plan(project, plan) -> None:
    for line in plan.lines(project):
        console.print(line, highlight=False)


def _train_with_progress(project, **kwargs):
    from ..run.training import run_training
    from ..run.validation import verdict_lines
    from .progress import TrainingProgress
    from .sample_cmds import sampling_during_training

    with (
        sampling_during_training(project, kwargs.get("device")) as on_epoch_end,
        TrainingProgress(console) as progress,
    ):
        results = run_training(
            project,
            on_plan=lambda plan: _print_plan(project, plan),
            on_step=progress,
            on_epoch_end=on_epoch_end,
            **kwargs,
        )
    for r in results:
        verb = "already trained" if r.skipped else f"trained {r.steps} steps"
        console.print(f"{r.expert}: {verb} -> {r.lora_path}")
    verdict = verdict_lines(project)
    if verdict:
        console.print("\nIs the LoRA working?", style="bold")
        for line in verdict:
            console.print(line, markup=False)
    return results


def _demo_project(recipe: str, directory: Path, epochs: int | None):
    """The demo project of `recipe` and what its dataset holds."""
    from ..demo import create_demo_project
    from ..demo_i2v import I2V_RECIPE, create_i2v_demo_project
    from ..demo_ti2v import TI2V_RECIPE, create_ti2v_demo_project
    from ..errors import WanloraError

    given = {"epochs": epochs} if epochs else {}
    if recipe == TI2V_RECIPE:
        project = create_ti2v_demo_project(directory, **given)
        return project, "tiny models, 6 generated images and 3 videos"
    if recipe == I2V_RECIPE:
        return create_i2v_demo_project(directory, **given), "tiny models, 4 generated videos"
    if recipe != "wan22-t2v":
        raise WanloraError(
            f"no demo for recipe {recipe!r}",
            f"use --recipe wan22-t2v, {I2V_RECIPE} or {TI2V_RECIPE}",
        )
    return create_demo_project(directory, **given), "tiny models, 18 generated images"


@app.command()
def demo(
    directory: Path = typer.Argument(Path("wanlora-demo"), help="Folder for the demo project."),
    epochs: int = typer.Option(
        None, help="Epochs per expert (default 3 for wan22-t2v: 18 steps each; 2 for TI2V)."
    ),
    recipe: str = typer.Option(
        "wan22-t2v",
        "--recipe",
        "-r",
        help="The recipe to demo: wan22-t2v, wan22-i2v (videos, first frames) or wan22-ti2v-5b.",
    ),
) -> None:
    """The whole pipeline on tiny built-in models: CPU, no downloads, about a minute."""
    import torch

    from ..run.training import describe_lora

    project, holds = _demo_project(recipe, directory, epochs)
    console.print(styled("demo project", "green"), project.root, f"({holds})")
    # an existing demo folder: a new run (the earlier ones are kept in output/runs/)
    results = _train_with_progress(project, device=torch.device("cpu"), new_run=True)
    console.print(f"\nYour {'two LoRAs' if len(results) == 2 else 'LoRA'}:", style="bold")
    for result in results:
        console.print(describe_lora(result.lora_path))
    # one command per line: "A | B" would read as a shell pipe
    console.print("\nTry next:")
    for command in ("check", "inspect config", "train", "runs"):
        extra = " --new-run" if command == "train" else ""
        console.print(f"  wanlora {command} {project.root}{extra}")
    if project.config.dit_task == "i2v":  # videos from the [sample] image, the LoRAs just trained
        console.print(f"  wanlora sample {project.root}")


@app.command()
def runs(
    directory: Path = typer.Argument(Path("."), help="Project folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
) -> None:
    """The runs kept: number, date, status, steps, final loss, what changed between them."""
    import json

    from ..run.history import run_lines, run_rows

    rows = run_rows(load_project(directory))
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    for line in run_lines(rows):
        console.print(line, highlight=False)
