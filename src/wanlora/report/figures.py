"""Every picture in the report, as a `data:` URI so the page needs no other file.

Photos (dataset thumbnails, large samples) are JPEG, the rest PNG; images wider than
MAX_IMAGE_WIDTH are shrunk. Plots are matplotlib on an Agg canvas (no pyplot state, no
display): loss per expert (raw and smoothed as tensorboard smooths), the learning rate,
the timesteps each expert trains on (the recipe's own sampler, seeded), and per expert the
validation loss (from the base model at step 0) with the LoRA's effect on the prediction.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import torch
from PIL import Image

from ..recipes import RecipeConfig
from ..train.timesteps import sample_timesteps
from .data import SMOOTHING, Series, smooth
from .validation import ValidationPoint

COLORS = {"high": "#d9480f", "low": "#1c7ed6", "main": "#2b8a3e"}
THUMB = 128
MAX_IMAGE_WIDTH = 1024
JPEG_ABOVE_PIXELS = 512 * 512  # samples larger than this are photos: JPEG keeps the page small
TIMESTEP_DRAWS = 20000


def data_uri(image: Image.Image, *, max_width: int = MAX_IMAGE_WIDTH, jpeg: bool = False) -> str:
    """An image as a data: URI (shrunk to max_width; JPEG for photos, PNG otherwise)."""
    if image.width > max_width:
        image = image.resize(
            (max_width, round(image.height * max_width / image.width)), Image.LANCZOS
        )
    buffer = io.BytesIO()
    if jpeg:
        image.convert("RGB").save(buffer, "JPEG", quality=85)
        mime = "image/jpeg"
    else:
        image.save(buffer, "PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def thumbnail(path: Path) -> tuple[str, tuple[int, int]] | None:
    """A dataset image's thumbnail URI and the image's stored size; None if unreadable."""
    try:
        with Image.open(path) as image:
            size = image.size
            image.thumbnail((THUMB, THUMB))
            return data_uri(image.convert("RGB"), jpeg=True), size
    except Exception:
        return None


def sample_uri(path: Path) -> str | None:
    """A sample image's URI; None if it cannot be read (it is left out of the page)."""
    try:
        with Image.open(path) as image:
            return data_uri(image.convert("RGB"), jpeg=image.width * image.height > JPEG_ABOVE_PIXELS)
    except Exception:
        return None


def _figure_uri(fig) -> str:
    # lazy: matplotlib is heavy and only the report draws
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _new_figure(width: float, height: float):
    # lazy: matplotlib is heavy and only the report draws
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def panel_title(expert: str, what: str, one_model: bool) -> str:
    """ "high expert: loss"; a one-model task (TI2V-5B) has no experts: "loss"."""
    return what if one_model else f"{expert} expert: {what}"


def loss_figure(logs: dict[str, dict[str, Series]], *, one_model: bool = False) -> str | None:
    """Loss per expert, raw and smoothed; None before anything was logged."""
    experts = [e for e, tags in logs.items() if tags.get("loss") and tags["loss"].steps]
    if not experts:
        return None
    fig = _new_figure(5.2 * len(experts), 3.4)
    axes = fig.subplots(1, len(experts), squeeze=False)[0]
    for ax, expert in zip(axes, experts, strict=True):
        series = logs[expert]["loss"]
        color = COLORS.get(expert, "#495057")
        ax.plot(series.steps, series.values, color=color, alpha=0.25, lw=1, label="raw")
        ax.plot(
            series.steps, smooth(series.values), color=color, lw=2, label=f"smoothed ({SMOOTHING})"
        )
        ax.set_title(panel_title(expert, "loss", one_model))
        ax.set_xlabel("step")
        ax.set_ylabel("MSE loss")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    return _figure_uri(fig)


def lr_figure(logs: dict[str, dict[str, Series]]) -> str | None:
    """The learning rate of every expert on one plot; None before anything was logged."""
    experts = [e for e, tags in logs.items() if tags.get("lr") and tags["lr"].steps]
    if not experts:
        return None
    fig = _new_figure(6.5, 3.2)
    ax = fig.subplots()
    for i, expert in enumerate(experts):  # dashed after the first: equal curves stay visible
        series = logs[expert]["lr"]
        style = "-" if i == 0 else "--"
        ax.plot(series.steps, series.values, style, color=COLORS.get(expert), lw=2, label=expert)
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _figure_uri(fig)


def timestep_figure(config: RecipeConfig, samples: int = TIMESTEP_DRAWS) -> str:
    """Histogram of the timesteps each expert trains on (the recipe's sampler, seeded)."""
    fig = _new_figure(6.5, 3.2)
    ax = fig.subplots()
    for expert, settings in config.experts.items():
        generator = torch.Generator().manual_seed(0)
        t = sample_timesteps(
            samples,
            config.timesteps,
            settings.min_timestep,
            settings.max_timestep,
            generator=generator,
        )
        ax.hist(
            (t * 1000).numpy(),
            bins=100,
            range=(0, 1000),
            color=COLORS.get(expert),
            alpha=0.75,
            label=f"{expert} ({settings.min_timestep}-{settings.max_timestep})",
        )
    if config.boundary is not None:
        ax.axvline(config.boundary * 1000, color="#212529", ls="--", lw=1, label="boundary")
    ax.set_title(f"training timesteps ({config.timesteps.timestep_sampling}, {samples} draws each)")
    ax.set_xlabel("timestep (0 = clean, 1000 = noise)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return _figure_uri(fig)


def validation_figure(
    validation: dict[str, list[ValidationPoint]], *, one_model: bool = False
) -> str | None:
    """Per expert: validation loss (left axis, the base model at step 0 marked) and the
    LoRA's effect on the prediction in % (right axis); None without a validation log."""
    experts = [e for e, points in validation.items() if points]
    if not experts:
        return None
    fig = _new_figure(5.2 * len(experts), 3.4)
    axes = fig.subplots(1, len(experts), squeeze=False)[0]
    for ax, expert in zip(axes, experts, strict=True):
        points = validation[expert]
        steps = [p.step for p in points]
        color = COLORS.get(expert, "#495057")
        ax.plot(steps, [p.loss for p in points], "o-", color=color, lw=2, ms=4, label="loss")
        base = [p for p in points if p.step == 0]
        if base:
            ax.axhline(base[0].loss, color="#868e96", ls=":", lw=1, label="base model")
        ax.set_title(panel_title(expert, "validation", one_model))
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
        effect = ax.twinx()
        effect.plot(
            steps,
            [100 * p.effect for p in points],
            "s--",
            color="#212529",
            lw=1,
            ms=3,
            label="LoRA effect",
        )
        effect.set_ylabel("LoRA effect on the prediction (%)")
        effect.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        more = effect.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize=8)
    return _figure_uri(fig)
