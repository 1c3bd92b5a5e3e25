"""output/report.html: the page, from `data.ReportData` through one Jinja2 template.

`build_report` gathers the data (`data.gather`), turns every picture into a data URI
(`figures`), shapes both into small view objects (text already formatted), and renders
templates/report.html.j2 with autoescape on: every value from a user's files (captions,
prompts, file names, config) is escaped by the template, never by hand. The page is
written atomically and readable by all (a page to share, not a secret).

The page is one self-contained file: images and videos as data URIs, CSS inline, no
scripts, no external links, so it opens offline from disk and can be mailed around. The
grid's videos play inline (muted, looping, autoplay, playsinline: what browsers allow
without a script); media.MediaBudget keeps their size bounded and the page says what it
embeds and what it left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..fsutil import atomic_write_text
from ..outputs import OutputLayout
from ..recipes import Project
from ..sampling.files import video_of
from .data import DatasetRow, ExpertPerformance, ReportData, SampleFile, SampleSets, gather
from .figures import (
    loss_figure,
    lr_figure,
    sample_uri,
    thumbnail,
    timestep_figure,
    validation_figure,
)
from .grids import SampleGrid
from .media import MIB, MediaBudget
from .validation import ExpertVerdict

TEMPLATE = "report.html.j2"


@dataclass
class Picture:
    uri: str
    alt: str
    caption: str
    video: str | None = None  # a `wanlora sample --frames N` clip, played in place of the still


@dataclass
class DatasetView:
    number: int
    name: str
    thumb: str | None  # None: the image does not decode
    size: str
    bucket: str
    caption: str


@dataclass
class SamplesView:
    empty: bool
    compare: list[Picture]
    standalone: list[Picture]


@dataclass
class Cell:
    still: str  # data URI of the PNG (a clip's first frame: the video's poster)
    video: str | None  # data URI of the .mp4; None for a still or a video left out
    alt: str
    caption: str


@dataclass
class GridView:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell | None]]]
    note: str  # what the cap left out, or ""


@dataclass
class VerdictView:
    label: str  # "high expert"; "LoRA" for a one-model task (TI2V-5B)
    level: str
    effect: str
    text: str
    causes: list[str]


@dataclass
class CostView:
    training: str
    sampling: str
    validation: str
    media: str  # what the grid embeds, and what it left out


def build_report(project: Project, out_path: Path | None = None) -> Path:
    """Write output/report.html for the project's current outputs; returns its path."""
    page = render_page(gather(project))
    out_path = out_path or OutputLayout.of(project).report
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, page)
    out_path.chmod(0o644)  # a page to share, not a secret
    return out_path


def render_page(data: ReportData) -> str:
    """The report's HTML for `data`."""
    budget = MediaBudget()
    grids = [_grid_view(grid, budget) for grid in data.grids]
    samples = _samples_view(data.samples, budget)  # before the cost line counts the media
    experts = len(data.config.experts)
    return environment().get_template(TEMPLATE).render(
        grids=grids,
        verdict=[_verdict_view(v, experts) for v in data.verdict],
        validation_plot=validation_figure(data.validation, one_model=experts == 1),
        cost=_cost_view(data.performance, budget),
        data=data,
        loss_plot=loss_figure(data.logs, one_model=experts == 1),
        lr_plot=lr_figure(data.logs),
        timestep_plot=timestep_figure(data.config),
        dataset=[_dataset_view(n, row) for n, row in enumerate(data.dataset, 1)],
        samples=samples,
        performance=[_performance_cells(p) for p in data.performance],
    )


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("wanlora.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _dataset_view(number: int, row: DatasetRow) -> DatasetView:
    thumb = thumbnail(row.path)
    size = row.size or (thumb[1] if thumb else None)
    return DatasetView(
        number=number,
        name=row.path.name,
        thumb=thumb[0] if thumb else None,
        size=f"{size[0]}×{size[1]}" if size else "?",
        bucket=f"{row.bucket[0]}×{row.bucket[1]}" if row.bucket else "?",
        caption=row.caption,
    )


def _picture(sample: SampleFile | None, caption: str) -> Picture | None:
    uri = sample_uri(sample.path) if sample is not None else None
    return Picture(uri, sample.path.name, caption) if uri is not None else None


def _strengths(info: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in (info.get("strengths") or {}).items())


def _samples_view(sets: SampleSets, budget: MediaBudget | None = None) -> SamplesView:
    compare = [
        _picture(s, f"{s.path.name}: seeds {s.info.get('seeds')}, LoRA {_strengths(s.info)}")
        for s in sets.compare
    ]
    standalone = [
        _picture(s, f"{s.info['prompt']} — seed {s.info.get('seed')}, LoRA {_strengths(s.info)}")
        for s in sets.standalone
    ]
    for picture, sample in zip(standalone, sets.standalone, strict=True):
        video = video_of(sample.path, sample.info)
        if picture is not None and video is not None and budget is not None:
            picture.video = budget.video(video)
    return SamplesView(
        empty=not sets.files,
        compare=[p for p in compare if p],
        standalone=[p for p in standalone if p],
    )


def _grid_view(grid: SampleGrid, budget: MediaBudget) -> GridView:
    columns = [f"LoRA at {s:g}" for s in grid.strengths]
    rows = []
    for row in grid.rows:
        cells = []
        for sample in row.cells:
            cells.append(_cell(sample, budget) if sample is not None else None)
        label = "base models (no LoRA)" if row.expert is None else row.label
        rows.append((label, cells))
    note = ""
    if grid.epochs_left_out:
        note = f"{grid.epochs_left_out} epochs left out (first, last and evenly between shown)."
    return GridView(f"prompt {grid.prompt_index}: {grid.prompt}", columns, rows, note)


def _cell(sample: SampleFile, budget: MediaBudget) -> Cell | None:
    still = budget.still(sample.path)
    if still is None:
        return None
    video_path = video_of(sample.path, sample.info)
    video = budget.video(video_path) if video_path is not None else None
    frames = sample.info.get("frames")
    caption = f"{video_path.name} · {frames} frames" if video_path else sample.path.name
    return Cell(still, video, sample.path.name, caption)


def _verdict_view(v: ExpertVerdict, experts: int) -> VerdictView:
    """One row of the verdict: the summary, its causes listed under it."""
    level = v.level if v.level in ("none", "weak", "clear") else "unknown"
    label = f"{v.expert} expert" if experts > 1 else "LoRA"
    return VerdictView(label, level, f"{100 * v.effect:.2f}%", v.summary, v.causes)


def _cost_view(performance: list[ExpertPerformance], budget: MediaBudget) -> CostView:
    """Training, sampling and validation time apart (training's s/step is training alone)."""

    def total(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    training = total([p.training_seconds for p in performance])
    parts = []
    for seconds in (
        total([p.sample_seconds for p in performance]),
        total([p.validation_seconds for p in performance]),
    ):
        if seconds is None:
            parts.append("—")
        elif training:
            parts.append(f"{_duration(seconds)} ({100 * seconds / training:.0f}% of training)")
        else:
            parts.append(_duration(seconds))
    media = (
        f"Samples embedded in this page: {budget.videos} videos and {budget.stills} grid stills, "
        f"{budget.embedded / MIB:.1f} MiB (stills shrunk to fit, videos re-encoded smaller "
        "where large)."
    )
    if budget.left_out:
        media += " Shown as first frames only (their .mp4 is in output/samples/): " + ", ".join(
            budget.left_out
        )
    return CostView(
        _duration(training) if training is not None else "—", parts[0], parts[1], media
    )


def _performance_cells(p: ExpertPerformance) -> list[str]:
    """One row of the timings table, formatted ("—" where nothing was recorded)."""

    def gib(value: float | None) -> str:
        return f"{value:.1f} GiB" if value is not None else "—"

    per_step = p.seconds_per_step
    return [
        p.expert,
        str(p.last_step) if p.last_step is not None else "—",
        _duration(p.training_seconds) if p.training_seconds is not None else "—",
        f"{per_step:.2f} s" if per_step is not None and math.isfinite(per_step) else "—",
        f"{p.last_loss:.4f}" if p.last_loss is not None else "—",
        gib(p.peak_vram_gib),
        gib(p.peak_rss_gib),
        f"{p.sample_seconds:.1f} s" if p.sample_seconds is not None else "—",
        f"{p.validation_seconds:.1f} s" if p.validation_seconds is not None else "—",
        f"{p.lora_file.name} ({p.lora_bytes / 1024**2:.1f} MiB)"
        if p.lora_bytes is not None
        else "not trained",
    ]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
