"""`wanlora sample` and `wanlora report`."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import typer

from ..errors import WanloraError
from ..recipes import load_project
from .app import app, console, styled


def _size(value: str | None) -> tuple[int | None, int | None]:
    if not value:
        return None, None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not match:
        raise WanloraError(f"--size {value!r}: expected WIDTHxHEIGHT", "e.g. --size 960x960")
    return int(match.group(1)), int(match.group(2))


@app.command()
def sample(
    directory: Path = typer.Argument(Path("."), help="Project folder."),
    prompt: list[str] = typer.Option(
        None, "--prompt", "-p", help="A prompt (repeat for more; default: [sample] prompts)."
    ),
    seed: list[int] = typer.Option(None, "--seed", help="Seed (repeat for more)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Denoising steps."),
    size: str = typer.Option(None, "--size", help="WIDTHxHEIGHT, multiples of 16."),
    high_strength: float = typer.Option(None, "--high-strength", help="High-noise LoRA strength."),
    low_strength: float = typer.Option(None, "--low-strength", help="Low-noise LoRA strength."),
    strength: float = typer.Option(
        None, "--strength", help="Strength of every LoRA (a one-expert recipe's only one)."
    ),
    compare: bool = typer.Option(
        False, "--compare", help="Also render the same seeds without the LoRAs (a grid)."
    ),
    negative: str = typer.Option(None, "--negative", help="Negative prompt (default: Wan's)."),
    guidance: float = typer.Option(
        None, "--guidance", help="Guidance scale of every expert (default: each expert's own)."
    ),
    frames: int = typer.Option(
        None,
        "--frames",
        min=1,
        help="Frames per sample: 1 = a PNG; more = an H.264 .mp4 (4n+1) and a PNG of frame 1.",
    ),
    offload: bool = typer.Option(
        None,
        "--offload/--no-offload",
        help="Keep only the running expert on the GPU (default: decide from free VRAM).",
    ),
    device: str = typer.Option(None, help="cuda, cuda:1 or cpu (default: cuda if available)."),
    image: Path = typer.Option(
        None,
        "--image",
        help="Image-to-video (I2V-A14B, TI2V-5B): the first frame (default [sample] image).",
    ),
) -> None:
    """Images or videos from the trained LoRAs: the high-noise expert above the boundary, low
    below. I2V-A14B: videos from a first frame (--image). TI2V-5B: from its one LoRA,
    text-to-video or from --image."""
    import torch

    from ..cache.build import default_device
    from ..sampling.sample import ordered_experts, sample_project

    project = load_project(directory)
    prompts = list(prompt or project.config.sample.prompts)
    width, height = _size(size)
    names = ordered_experts(project.config)
    strengths = {name: strength for name in names if strength is not None}
    for name, value in (("high", high_strength), ("low", low_strength)):
        if value is None:
            continue
        if name not in names:
            raise WanloraError(
                f"--{name}-strength: recipe {project.config.recipe} has no {name} expert",
                "use --strength for a one-expert recipe",
            )
        strengths[name] = value
    if project.config.task == "ti2v-5B":  # one model: no experts, videos or images
        _sample_ti2v(
            project,
            prompts,
            seeds=seed or None,
            steps=steps,
            width=width,
            height=height,
            frames=frames,
            image=image.resolve() if image is not None else None,  # relative to here
            strengths=strengths,
            compare=compare,
            negative_prompt=negative,
            guidance_scale=guidance,
            device=torch.device(device) if device else default_device(),
        )
        return
    result = sample_project(
        project,
        prompts,
        seeds=seed or None,
        steps=steps,
        width=width,
        height=height,
        strengths=strengths,
        compare=compare,
        negative_prompt=negative,
        guidance_scale=guidance,
        frames=frames,
        offload=offload,
        device=torch.device(device) if device else default_device(),
        image=image.resolve() if image is not None else None,  # I2V; refused for T2V
    )
    if result.offloaded:
        console.print("the experts did not both fit on the GPU: ran one at a time", style="yellow")
    for path in result.images + result.base_images + result.videos:
        console.print(f"sample: {path}")
    if result.grid is not None:
        console.print(styled("compare grid", "green"), result.grid)


def _sample_ti2v(project, prompts, **options) -> None:
    from ..sampling.ti2v_sample import sample_ti2v_project

    result = sample_ti2v_project(project, prompts, **options)
    for path in result.images + result.base_images:
        console.print(f"sample: {path}")
    if result.grid is not None:
        console.print(styled("compare grid", "green"), result.grid)


@app.command()
def report(directory: Path = typer.Argument(Path("."), help="Project folder.")) -> None:
    """Write output/report.html: recipe, dataset, loss and lr curves, samples, timings."""
    from ..report import build_report

    path = build_report(load_project(directory))
    console.print(styled("report", "green"), path)


@contextlib.contextmanager
def sampling_during_training(project, device=None):
    """For `wanlora train`: yields the on_epoch_end callback (memory numbers, [sample]
    images every n epochs); after a successful run, writes output/report.html."""
    import logging

    import torch

    from ..cache.build import default_device
    from ..sampling.epoch_samples import TrainingMonitor

    monitor = TrainingMonitor(project, torch.device(device) if device else default_device())
    try:
        yield monitor
    finally:
        monitor.close()
    from ..report import build_report

    try:
        path = build_report(project)
    except Exception as exc:  # the LoRAs are saved; a report problem must not hide that
        logging.getLogger(__name__).warning("report not written: %s", exc)
    else:
        console.print(styled("report", "green"), path)
