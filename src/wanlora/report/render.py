"""output/report.html: the page, from `data.ReportData` through one Jinja2 template.

`build_report` gathers the data (`data.gather`), turns every picture into a data URI
(`figures`), shapes both into small view objects (text already formatted), and renders
templates/report.html.j2 with autoescape on: every value from a user's files (captions,
prompts, file names, config) is escaped by the template, never by hand. The page is
written atomically and readable by all (a page to share, not a secret).

The page is one self-contained file: images as data URIs, CSS inline, no scripts, no
external links, so it opens offline from disk and can be mailed around.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..fsutil import atomic_write_text
from ..outputs import OutputLayout
from ..recipes import Project
from .data import DatasetRow, ExpertPerformance, ReportData, SampleFile, SampleSets, gather
from .figures import loss_figure, lr_figure, sample_uri, thumbnail, timestep_figure

TEMPLATE = "report.html.j2"


@dataclass
class Picture:
    uri: str
    alt: str
    caption: str


@dataclass
class DatasetView:
    number: int
    name: str
    thumb: str | None  # None: the image does not decode
    size: str
    bucket: str
    caption: str


@dataclass
class TrainingView:
    expert: str
    prompts: list[int]
    rows: list[tuple[int, list[Picture | None]]]


@dataclass
class SamplesView:
    empty: bool
    compare: list[Picture]
    standalone: list[Picture]
    training: list[TrainingView]


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
    return environment().get_template(TEMPLATE).render(
        data=data,
        loss_plot=loss_figure(data.logs),
        lr_plot=lr_figure(data.logs),
        timestep_plot=timestep_figure(data.config),
        dataset=[_dataset_view(n, row) for n, row in enumerate(data.dataset, 1)],
        samples=_samples_view(data.samples),
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


def _samples_view(sets: SampleSets) -> SamplesView:
    compare = [
        _picture(s, f"{s.path.name}: seeds {s.info.get('seeds')}, LoRA {_strengths(s.info)}")
        for s in sets.compare
    ]
    standalone = [
        _picture(s, f"{s.info['prompt']} — seed {s.info.get('seed')}, LoRA {_strengths(s.info)}")
        for s in sets.standalone
    ]
    training = [
        TrainingView(
            table.expert,
            table.prompts,
            [
                (epoch, [_picture(s, s.info.get("prompt", "")) if s else None for s in cells])
                for epoch, cells in table.rows
            ],
        )
        for table in sets.training
    ]
    return SamplesView(
        empty=not sets.files,
        compare=[p for p in compare if p],
        standalone=[p for p in standalone if p],
        training=training,
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
        f"{p.lora_file.name} ({p.lora_bytes / 1024**2:.1f} MiB)"
        if p.lora_bytes is not None
        else "not trained",
    ]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
