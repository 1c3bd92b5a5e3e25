"""`wanlora download` and `wanlora doctor`: get the model files, and check a run can start."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from .. import doctor as doctor_lib
from ..models import download as dl
from ..recipes import load_project
from .app import app, console, err_console, styled


@app.command()
def download(
    directory: Path = typer.Argument(..., help="Project folder."),
    only: list[str] = typer.Option(
        None,
        "--only",
        help="Only these: expert names (high, low), kinds (dit, vae, text_encoder, "
        "tokenizer) or registry ids. Repeat or separate with commas.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be fetched; fetch nothing."
    ),
) -> None:
    """Fetch the project's model files into the shared models folder (resumable)."""
    # huggingface_hub 2.x talks through httpx2, which logs every request at INFO
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    project = load_project(directory)
    if dry_run:
        _print_plan(dl.plan_download(project, only))
        return
    with Progress(
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=False,
    ) as bars:
        tasks: dict[str, int] = {}

        def on_progress(job: dl.FileJob, done: int) -> None:
            if job.label not in tasks:
                tasks[job.label] = bars.add_task(job.filename.rsplit("/", 1)[-1], total=job.size)
            bars.update(tasks[job.label], completed=done)

        plan = dl.download_models(project, only, progress=on_progress)
    for job in plan.jobs:
        verdict = {"skip": "already complete", "absent": "not in repo (optional)"}.get(
            job.action, "downloaded"
        )
        console.print(f"{job.label}: {verdict}", highlight=False)
    for ref, path in plan.local:
        console.print(f"{ref.key}: using {path}", highlight=False)
    console.print(styled("Model files ready in", "green"), plan.models_dir)


def _print_plan(plan: dl.DownloadPlan) -> None:
    table = Table(title=f"Download plan ({plan.endpoint} -> {plan.models_dir})")
    for column in ("file", "size", "action"):
        table.add_column(column, overflow="fold")
    for job in plan.jobs:
        size = dl.human_bytes(job.size) if job.size is not None else "?"
        action = {
            "skip": "skip (complete)",
            "resume": f"resume from {dl.human_bytes(job.have)}",
            "absent": "skip (optional, not in repo)",
        }.get(job.action, "fetch")
        table.add_row(job.label, size, action)
    for ref, path in plan.local:
        table.add_row(str(path), "", f"use local file ({ref.key})")
    console.print(table)
    enough = plan.bytes_to_fetch <= plan.free_bytes
    console.print(
        f"to download: {dl.human_bytes(plan.bytes_to_fetch)}; free disk: "
        f"{dl.human_bytes(plan.free_bytes)}",
        *(() if enough else (styled(" NOT ENOUGH", "bold red"),)),
        highlight=False,
    )


@app.command()
def doctor(
    directory: Path = typer.Argument(None, help="Project folder (omit to check the machine only)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check the machine (and a project) for what a training run needs. Exit 0 = no FAIL line."""
    project = load_project(directory) if directory is not None else None
    report = doctor_lib.run_doctor(project)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        table = Table(show_lines=False)
        for column in ("check", "status", "detail", "what to do"):
            table.add_column(column, overflow="fold")
        style = {"ok": "green", "warn": "yellow", "FAIL": "bold red"}
        for c in report.checks:
            table.add_row(c.name, styled(c.status, style[c.status]), c.detail, c.fix)
        console.print(table)
        console.print(
            report.verdict,
            style=("green" if report.project else "yellow") if report.ok else "bold red",
        )
    if not report.ok:
        raise typer.Exit(1)
