"""`wanlora check`: lint the dataset and print a table, or the findings as JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from ..dataset.lint import CheckReport, check_dataset, project_for_check
from ..recipes import refuse_dataset_folder
from .app import app, console, styled


@app.command()
def check(
    directory: Path = typer.Argument(Path("."), help="Project folder (or a folder of images)."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Lint the dataset: pairing, decoding, buckets, captions, duplicates. Changes nothing."""
    refuse_dataset_folder(directory)  # mylora/dataset: the project's settings would be lost
    report = check_dataset(project_for_check(directory))
    if as_json:
        typer.echo(report.to_json())
    else:
        print_report(report)
    if report.errors:
        raise typer.Exit(1)


def print_report(report: CheckReport) -> None:
    tokens_header = "tokens" + (" (est.)" if report.tokens_are_estimate else "")
    table = Table(title="Dataset", show_lines=False)
    for column in ("image", "size", "bucket", tokens_header, "findings"):
        table.add_column(column, overflow="fold")
    for image in report.images:
        size = f"{image.width}x{image.height}" if image.width else "-"
        bucket = f"{image.bucket[0]}x{image.bucket[1]}" if image.bucket else "-"
        tokens = "-" if image.caption_tokens is None else str(image.caption_tokens)
        findings = Text("\n").join(
            styled(f, "red" if f.startswith("error") else "yellow") for f in image.findings
        )
        table.add_row(
            Path(image.path).name, size, bucket, tokens, findings or styled("ok", "green")
        )
    if report.images:
        console.print(table)
    console.print(f"token counts: ({report.token_count_source})")
    # Findings about one image are in its row; the rest (folders, stray files) go below.
    for finding in report.errors:
        if finding.image is None:
            console.print(styled("error", "bold red"), f"{finding.path}: {finding.message}")
    for finding in report.warnings:
        if finding.image is None:
            console.print(styled("warning", "yellow"), f"{finding.path}: {finding.message}")
    verdict = (
        styled("not ready", "bold red") if report.errors else styled("ready to train", "bold green")
    )
    console.print(
        f"{len(report.images)} images, {len(report.errors)} errors, "
        f"{len(report.warnings)} warnings:",
        verdict,
    )
