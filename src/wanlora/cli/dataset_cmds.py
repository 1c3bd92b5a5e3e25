"""`wanlora check`: lint the dataset and print a table, or the findings as JSON; and
`wanlora inspect clips`: every video clip the settings select."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from ..dataset.clip_list import ClipList, project_clip_list
from ..dataset.lint import CheckReport, check_dataset, project_for_check
from ..recipes import refuse_dataset_folder
from .app import app, console, inspect_app, styled


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
    if report.videos:
        console.print(video_table(report, tokens_header))
    console.print(f"token counts: ({report.token_count_source})")
    if report.largest_bucket:
        width, height, frames = report.largest_bucket
        console.print(
            f"largest bucket: {width}x{height}, {frames} frame{'s' if frames > 1 else ''} -> "
            f"{report.largest_bucket_tokens} DiT tokens",
            highlight=False,
        )
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
    clips = sum(video.clips for video in report.videos)
    videos = f"{len(report.videos)} videos ({clips} clips), " if report.videos else ""
    console.print(
        f"{len(report.images)} images, {videos}{len(report.errors)} errors, "
        f"{len(report.warnings)} warnings:",
        verdict,
    )


def video_table(report: CheckReport, tokens_header: str) -> Table:
    """One row per video: its frames and rate, bucket, clips per video, findings."""
    table = Table(title="Videos", show_lines=False)
    for column in ("video", "frames", "bucket", "clips", tokens_header, "findings"):
        table.add_column(column, overflow="fold")
    for video in report.videos:
        frames = "-" if video.frame_count is None else str(video.frame_count)
        if video.fps:
            frames += f" @ {video.fps:.4g} fps" + (" (variable)" if video.variable_fps else "")
        bucket = f"{video.bucket[0]}x{video.bucket[1]}" if video.bucket else "-"
        lengths = ", ".join(map(str, video.clip_frames))
        clips = f"{video.clips} ({lengths} frames)" if video.clips else "0"
        tokens = "-" if video.caption_tokens is None else str(video.caption_tokens)
        findings = Text("\n").join(
            styled(f, "red" if f.startswith("error") else "yellow") for f in video.findings
        )
        table.add_row(
            Path(video.path).name, frames, bucket, clips, tokens, findings or styled("ok", "green")
        )
    return table


@inspect_app.command("clips")
def inspect_clips(
    directory: Path = typer.Argument(Path("."), help="Project folder (or a folder of videos)."),
    as_json: bool = typer.Option(False, "--json", help="Print the clips as JSON."),
) -> None:
    """Every video clip training will use: source, start frame, frame count, bucket."""
    listing = project_clip_list(project_for_check(directory))
    if as_json:
        typer.echo(listing.to_json())
    else:
        print_clips(listing)
    if listing.errors or any(v.error for v in listing.videos):
        raise typer.Exit(1)


def print_clips(listing: ClipList) -> None:
    fps = f"{listing.target_fps:g}"
    for video in listing.videos:
        name = Path(video.source).name
        if video.error:
            console.print(styled("error", "bold red"), video.error)
            continue
        rate = f"{video.fps:g} fps" if video.fps else "no frame rate"
        if video.variable_fps:
            rate += " (variable)"
        used = (
            f"{video.used_frames} at {fps} fps (source_fps {video.source_fps:g})"
            if video.source_fps
            else f"{video.used_frames} used as they are (source_fps unset)"
        )
        console.print(
            styled(name, "bold"),
            f": {video.frame_count} frames, {rate}; {used}; "
            f"{video.size[0]}x{video.size[1]} -> bucket {video.bucket[0]}x{video.bucket[1]}; "
            f"{video.frame_extraction}: {len(video.clips)} clips",
            sep="",
            highlight=False,
        )
        if not video.clips:
            continue
        table = Table("clip", "start", "frames", "source frames", "bucket", box=None)
        for clip in video.clips:
            first, last = clip.source_frames
            table.add_row(
                clip.name,
                str(clip.start),
                str(clip.frames),
                f"{first}-{last}",
                f"{clip.bucket[0]}x{clip.bucket[1]}",
            )
        console.print(table)
    for error in listing.errors:
        console.print(styled("error", "bold red"), error)
    console.print(f"{listing.clip_count} clips from {len(listing.videos)} videos")
