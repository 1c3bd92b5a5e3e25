"""output/report.html: one self-contained page about a training run.

Everything is inside the file: images as base64 data URIs, CSS inline, no scripts, no
external links, so it opens offline and can be mailed around. Sections: the recipe and the
project's overrides, the dataset (thumbnails + captions), loss per expert (raw and
smoothed) and learning rate read from the tensorboard logs (output/logs/<expert>), the
timestep distribution each expert trains on, the samples (with/without LoRA grids,
standalone samples, samples during training), and timings and peak memory where recorded.
Plots are matplotlib (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import WanloraError
from ..fsutil import atomic_write_text
from ..recipes import Project, config_to_toml

log = logging.getLogger(__name__)

COLORS = {"high": "#d9480f", "low": "#1c7ed6", "main": "#2b8a3e"}
SMOOTHING = 0.9  # tensorboard's default slider value
THUMB = 128
MAX_IMAGE_WIDTH = 1024
MAX_GALLERY = 12


# --- data ------------------------------------------------------------------------------


@dataclass
class Series:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)


def read_scalars(log_dir: Path) -> dict[str, Series]:
    """Every scalar tag in a tensorboard log folder (all event files); the last value wins
    where a step was logged twice (a resumed or restarted run)."""
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        EventAccumulator,
    )

    if not log_dir.is_dir() or not any(log_dir.glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0, IMAGES: 1})
    quiet = logging.getLogger("tensorboard")  # "Directory watcher advancing ..." per file
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        accumulator.Reload()
    finally:
        quiet.setLevel(level)
    result = {}
    for tag in accumulator.Tags().get("scalars", []):
        by_step: dict[int, tuple[float, float]] = {}
        for event in sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time):
            by_step[event.step] = (event.value, event.wall_time)
        steps = sorted(by_step)
        result[tag] = Series(steps, [by_step[s][0] for s in steps], [by_step[s][1] for s in steps])
    return result


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Tensorboard's smoothing: a debiased exponential moving average."""
    out, last, n = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        n += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**n))
    return out


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


def _figure_uri(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# --- plots -----------------------------------------------------------------------------


def loss_figure(logs: dict[str, dict[str, Series]]) -> str | None:
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
        ax.set_title(f"{expert} expert: loss")
        ax.set_xlabel("step")
        ax.set_ylabel("MSE loss")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    return _figure_uri(fig)


def lr_figure(logs: dict[str, dict[str, Series]]) -> str | None:
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


def timestep_figure(project: Project, samples: int = 20000) -> str:
    """Histogram of the timesteps each expert trains on (the recipe's sampler, seeded)."""
    import torch

    from ..train.timesteps import sample_timesteps

    config = project.config
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


# --- html pieces -----------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f8f9fa;color:#212529}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{margin:0 0 4px 0;font-size:28px}
h2{margin:0 0 12px 0;font-size:20px;border-bottom:2px solid #dee2e6;padding-bottom:6px}
section{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:16px 20px;margin:16px 0}
.sub{color:#6c757d;margin:0}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{background:#f1f3f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{max-width:100%;height:auto;display:block;margin:8px 0}
img.thumb{max-width:96px;max-height:96px;width:auto;height:auto;border-radius:4px}
pre{background:#f1f3f5;padding:10px;border-radius:6px;overflow:auto;font-size:13px}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;max-width:280px}
figure img{width:100%;height:auto;border-radius:4px;image-rendering:pixelated}
figure.wide{max-width:100%}
td figure{max-width:160px}
figcaption{font-size:12px;color:#495057;margin-top:4px;word-break:break-word}
.note{color:#6c757d;font-style:italic}
.kv td:first-child{width:260px;color:#495057}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _plot(uri: str | None, alt: str, missing: str) -> str:
    if uri is None:
        return f'<p class="note">{_e(missing)}</p>'
    return f'<img class="plot" alt="{_e(alt)}" src="{uri}">'


def recipe_section(project: Project) -> str:
    from ..recipes.project import read_overrides

    c = project.config
    rows = [
        ("recipe", f"{c.recipe} — {c.description}"),
        ("task", c.task),
        ("boundary", c.boundary if c.boundary is not None else "— (one expert)"),
        ("LoRA", f"dim {c.lora.network_dim}, alpha {c.lora.network_alpha:g}"),
        (
            "optimizer",
            f"{c.optimizer.optimizer_type}, lr {c.optimizer.learning_rate:g}, "
            f"weight decay {c.optimizer.weight_decay:g}, max grad norm {c.optimizer.max_grad_norm:g}",
        ),
        (
            "schedule",
            f"{c.scheduler.lr_scheduler}, power {c.scheduler.lr_scheduler_power:g}, "
            f"warmup {c.scheduler.lr_warmup_steps}",
        ),
        (
            "timesteps",
            f"{c.timesteps.timestep_sampling}, discrete flow shift {c.timesteps.discrete_flow_shift:g}, "
            f"preserve distribution shape {c.timesteps.preserve_distribution_shape}",
        ),
        (
            "training",
            f"{c.training.max_train_epochs} epochs, seed {c.training.seed}, "
            f"{c.training.mixed_precision}, fp8 base {c.training.fp8_base}, "
            f"batch {c.dataset.batch_size}, resolution {c.dataset.resolution[0]}x{c.dataset.resolution[1]}",
        ),
    ]
    for name, e in c.experts.items():
        rows.append(
            (
                f"expert {name}",
                f"timesteps {e.min_timestep}–{e.max_timestep}, DiT {e.dit}, "
                f"output {c.output_name(name)}",
            )
        )
    table = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    try:
        overrides = read_overrides(project.config_file)
    except WanloraError:
        overrides = {}
    import tomli_w

    overrides.pop("recipe", None)
    override_text = tomli_w.dumps(overrides).strip() or "(none: the recipe as published)"
    return (
        f'<table class="kv">{table}</table>'
        f"<h3>Overrides in wanlora.toml</h3><pre>{_e(override_text)}</pre>"
        f"<details><summary>Full effective config</summary><pre>{_e(config_to_toml(c))}</pre></details>"
    )


def dataset_section(project: Project) -> str:
    rows = []
    try:
        from ..dataset.items import load_items

        items = [(i.image_path, i.caption, i.original_size, i.bucket) for i in load_items(project)]
    except Exception as exc:  # a broken dataset still gets a report
        log.debug("dataset items unavailable: %s", exc)
        from ..dataset.discovery import caption_path, find_images

        items = []
        for path in find_images(project.dataset_dir) if project.dataset_dir.is_dir() else []:
            cap = caption_path(path, project.config.dataset.caption_extension)
            caption = (
                cap.read_text(encoding="utf-8", errors="replace").strip() if cap.exists() else ""
            )
            items.append((path, caption, None, None))
    if not items:
        return '<p class="note">No images found in the dataset folder.</p>'
    for n, (path, caption, size, bucket) in enumerate(items, 1):
        try:
            with Image.open(path) as image:
                image.thumbnail((THUMB, THUMB))
                thumb = f'<img class="thumb" alt="{_e(path.name)}" src="{data_uri(image.convert("RGB"), jpeg=True)}">'
                size = size or image.size
        except Exception:
            thumb = '<span class="note">unreadable</span>'
        size_text = f"{size[0]}×{size[1]}" if size else "?"
        bucket_text = f"{bucket[0]}×{bucket[1]}" if bucket else "?"
        rows.append(
            f"<tr><td class='num'>{n}</td><td>{thumb}</td><td>{_e(path.name)}<br>"
            f"<span class='sub'>{size_text} → bucket {bucket_text}</span></td>"
            f"<td>{_e(caption) or '<span class=note>no caption</span>'}</td></tr>"
        )
    return (
        f"<p class='sub'>{len(items)} images in {_e(project.dataset_dir)}</p>"
        "<table><tr><th>#</th><th>image</th><th>file</th><th>caption</th></tr>"
        + "".join(rows)
        + "</table>"
    )


@dataclass
class SampleFile:
    path: Path
    info: dict


def sample_files(project: Project) -> list[SampleFile]:
    from .sample import read_png_info

    folder = project.output_dir / "samples"
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.png") if not p.name.startswith(".")]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [SampleFile(p, read_png_info(p)) for p in files]


def _figure_html(sample: SampleFile, caption: str, wide: bool = False) -> str:
    try:
        with Image.open(sample.path) as image:
            uri = data_uri(image.convert("RGB"), jpeg=image.width * image.height > 512 * 512)
    except Exception:
        return ""
    cls = ' class="wide"' if wide else ""
    return (
        f'<figure{cls}><img alt="{_e(sample.path.name)}" src="{uri}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _strengths(info: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in (info.get("strengths") or {}).items())


def samples_section(project: Project) -> str:
    samples = sample_files(project)
    if not samples:
        return (
            '<p class="note">No samples yet: run <code>wanlora sample DIR -p "..." --compare</code>, '
            "or set [sample] prompts and every_n_epochs in wanlora.toml.</p>"
        )
    parts = []
    grids = [s for s in samples if s.info.get("kind") == "compare"][:4]
    if grids:
        parts.append("<h3>With and without the LoRAs</h3><div class='gallery'>")
        for s in grids:
            caption = f"{s.path.name}: seeds {s.info.get('seeds')}, LoRA {_strengths(s.info)}"
            parts.append(_figure_html(s, caption, wide=True))
        parts.append("</div>")
    standalone = [s for s in samples if "kind" not in s.info and s.info.get("prompt")][:MAX_GALLERY]
    if standalone:
        parts.append("<h3>Latest samples</h3><div class='gallery'>")
        for s in standalone:
            caption = f"{s.info['prompt']} — seed {s.info.get('seed')}, LoRA {_strengths(s.info)}"
            parts.append(_figure_html(s, caption))
        parts.append("</div>")
    training = [s for s in samples if s.info.get("kind") == "training"]
    if training:
        parts.append("<h3>During training</h3>")
        for expert in dict.fromkeys(s.info.get("expert") for s in reversed(training)):
            mine = [s for s in training if s.info.get("expert") == expert]
            latest: dict[tuple[int, int], SampleFile] = {}
            for s in reversed(mine):  # oldest first: the newest file of an (epoch, prompt) wins
                latest[(s.info.get("epoch", 0), s.info.get("prompt_index", 0))] = s
            epochs = sorted({e for e, _ in latest})
            if len(epochs) > 8:  # keep the page small: first, last and evenly between
                step = (len(epochs) - 1) / 7
                epochs = sorted({epochs[round(i * step)] for i in range(8)})
            prompts = sorted({p for _, p in latest})
            header = "".join(f"<th>prompt {p}</th>" for p in prompts)
            rows = []
            for epoch in epochs:
                cells = "".join(
                    f"<td>{_figure_html(latest[(epoch, p)], latest[(epoch, p)].info.get('prompt', ''))}</td>"
                    if (epoch, p) in latest
                    else "<td></td>"
                    for p in prompts
                )
                rows.append(f"<tr><td class='num'>epoch {epoch}</td>{cells}</tr>")
            parts.append(
                f"<h4>{_e(expert)} expert (its LoRA; the other phase on the base model)</h4>"
                f"<table><tr><th></th>{header}</tr>{''.join(rows)}</table>"
            )
    return "\n".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def performance_section(project: Project, logs: dict[str, dict[str, Series]]) -> str:
    from ..outputs import lora_path

    rows = []
    for expert in project.config.experts:
        tags = logs.get(expert, {})
        loss = tags.get("loss")
        lora = lora_path(project, expert)
        cells = [expert]
        sample_time = tags.get("perf/sample_seconds")
        if loss and loss.steps:
            elapsed = loss.wall_times[-1] - loss.wall_times[0]
            if sample_time and sample_time.values:  # samples rendered between logged steps
                between = [
                    v
                    for v, w in zip(sample_time.values, sample_time.wall_times, strict=True)
                    if loss.wall_times[0] < w < loss.wall_times[-1]
                ]
                elapsed = max(0.0, elapsed - sum(between))
            per_step = elapsed / (len(loss.steps) - 1) if len(loss.steps) > 1 else float("nan")
            total = per_step * loss.steps[-1] if math.isfinite(per_step) else elapsed
            cells += [
                str(loss.steps[-1]),
                _duration(total),
                f"{per_step:.2f} s" if math.isfinite(per_step) else "—",
                f"{loss.values[-1]:.4f}",
            ]
        else:
            cells += ["—"] * 4

        def peak(tag: str, tags=tags) -> str:
            series = tags.get(tag)
            return f"{max(series.values):.1f} GiB" if series and series.values else "—"

        cells += [
            peak("perf/peak_vram_gib"),
            peak("perf/peak_rss_gib"),
            f"{sum(sample_time.values):.1f} s" if sample_time and sample_time.values else "—",
            f"{lora.name} ({lora.stat().st_size / 1024**2:.1f} MiB)"
            if lora.exists()
            else "not trained",
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    head = (
        "<tr><th>expert</th><th>steps</th><th>training time</th><th>per step</th>"
        "<th>last loss</th><th>peak VRAM</th><th>peak RAM</th><th>sampling</th><th>LoRA file</th></tr>"
    )
    return (
        f"<table>{head}{''.join(rows)}</table><p class='sub'>Training time is estimated from the "
        "logged steps' wall-clock times, without the time spent sampling; peak memory is recorded once per epoch by "
        "<code>wanlora train</code> (VRAM on CUDA only).</p>"
    )


# --- the page ----------------------------------------------------------------------------


def build_report(project: Project, out_path: Path | None = None) -> Path:
    """Write output/report.html for the project's current outputs; returns its path."""
    config = project.config
    logs = {e: read_scalars(project.output_dir / "logs" / e) for e in config.experts}
    sections = [
        _section("recipe", "Recipe and overrides", recipe_section(project)),
        _section("dataset", "Dataset", dataset_section(project)),
        _section(
            "loss",
            "Loss",
            _plot(loss_figure(logs), "loss curves", "No training logs yet (output/logs/<expert>)."),
        ),
        _section(
            "lr", "Learning rate", _plot(lr_figure(logs), "learning rate", "No training logs yet.")
        ),
        _section(
            "timesteps",
            "Timestep distribution",
            _plot(timestep_figure(project), "timestep histogram", ""),
        ),
        _section("samples", "Samples", samples_section(project)),
        _section("performance", "Timings and memory", performance_section(project, logs)),
    ]
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = f"{config.project.name} by {config.project.author}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} — wanlora report</title>
<style>{CSS}</style></head>
<body><main>
<header><h1>{_e(title)}</h1>
<p class="sub">recipe {_e(config.recipe)} · {_e(project.root)} · report built {now}</p></header>
{chr(10).join(sections)}
</main></body></html>
"""
    out_path = out_path or project.output_dir / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, page)
    out_path.chmod(0o644)  # a page to share, not a secret
    return out_path
