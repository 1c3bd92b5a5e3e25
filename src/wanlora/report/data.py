"""What the report shows, read from a project's files into plain dataclasses.

Nothing here draws or writes HTML: `figures` turns this data into images, `render` into the
page. Sources, all under the project (paths from `OutputLayout`):

- the recipe and the project's overrides (wanlora.toml) -> `RecipeFacts`
- the dataset's images and captions (`load_items`; for a dataset that does not load, the
  images and captions found in the dataset folder) -> `DatasetRow`
- TensorBoard scalars per expert (output/logs/<expert>: loss, lr, perf/*) -> `Series`
- the PNGs under output/samples/ and the settings saved in them -> `SampleSets`, and the
  samples during training as one grid per prompt -> `SampleGrid` (grids.py)
- the validation log per expert (output/logs/<expert>/validation.jsonl) -> `ValidationPoint`,
  and the LoRA-effect verdict (output/verdict.json) -> `ExpertVerdict`; both optional
- timings, peak memory and the LoRA files per expert -> `ExpertPerformance` (training time
  without the time spent sampling and validating, which are reported on their own)
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ..dataset.discovery import caption_path, find_images
from ..dataset.items import load_items
from ..errors import WanloraError
from ..outputs import OutputLayout
from ..recipes import Project, RecipeConfig, config_to_toml
from ..recipes.project import read_overrides
from ..sampling.sample import read_png_info
from .grids import SampleFile, SampleGrid, sample_grids
from .validation import ExpertVerdict, ValidationPoint, read_validation, read_verdict

log = logging.getLogger(__name__)

SMOOTHING = 0.9  # tensorboard's default slider value
MAX_GALLERY = 12
MAX_COMPARE_GRIDS = 4
MAX_TRAINING_EPOCHS = 8  # columns of the during-training table: first, last, evenly between


# --- scalars ---------------------------------------------------------------------------


@dataclass
class Series:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)


def read_scalars(log_dir: Path) -> dict[str, Series]:
    """Every scalar tag in a tensorboard log folder (all event files); the last value wins
    where a step was logged twice (a resumed or restarted run)."""
    # lazy: tensorboard's event reader is heavy and only the report needs it
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


# --- recipe ----------------------------------------------------------------------------


@dataclass
class RecipeFacts:
    rows: list[tuple[str, str]]  # (setting, value) for the summary table
    overrides_toml: str  # what wanlora.toml changes, as TOML
    config_toml: str  # the full effective config


def recipe_facts(project: Project) -> RecipeFacts:
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
    try:
        overrides = read_overrides(project.config_file)
    except WanloraError:
        overrides = {}
    overrides.pop("recipe", None)
    return RecipeFacts(
        rows=[(key, str(value)) for key, value in rows],
        overrides_toml=tomli_w.dumps(overrides).strip() or "(none: the recipe as published)",
        config_toml=config_to_toml(c),
    )


# --- dataset ---------------------------------------------------------------------------


@dataclass
class DatasetRow:
    path: Path
    caption: str
    size: tuple[int, int] | None  # as stored; None where the dataset did not load
    bucket: tuple[int, int] | None


def dataset_rows(project: Project) -> list[DatasetRow]:
    """The training items; for a dataset that does not load, what its folder holds."""
    try:
        return [
            DatasetRow(i.image_path, i.caption, i.original_size, i.bucket)
            for i in load_items(project)
        ]
    except Exception as exc:  # a broken dataset still gets a report
        log.debug("dataset items unavailable: %s", exc)
    rows = []
    folder = project.dataset_dir
    for path in find_images(folder) if folder.is_dir() else []:
        cap = caption_path(path, project.config.dataset.caption_extension)
        caption = cap.read_text(encoding="utf-8", errors="replace").strip() if cap.exists() else ""
        rows.append(DatasetRow(path, caption, None, None))
    return rows


# --- samples ---------------------------------------------------------------------------


@dataclass
class TrainingSamples:
    """One expert's samples during training: a row per epoch, a column per prompt."""

    expert: str
    prompts: list[int]
    rows: list[tuple[int, list[SampleFile | None]]]  # (epoch, sample per prompt or None)


@dataclass
class SampleSets:
    files: int  # PNGs under output/samples/, of any kind
    compare: list[SampleFile]  # with/without LoRA grids, newest first
    standalone: list[SampleFile]  # `wanlora sample` images, newest first
    training: list[TrainingSamples]


def sample_files(project: Project) -> list[SampleFile]:
    """Every PNG under output/samples/ with its saved settings, newest first."""
    folder = OutputLayout.of(project).samples_dir
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.png") if not p.name.startswith(".")]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [SampleFile(p, read_png_info(p)) for p in files]


def sample_sets(project: Project) -> SampleSets:
    samples = sample_files(project)
    compare = [s for s in samples if s.info.get("kind") == "compare"][:MAX_COMPARE_GRIDS]
    standalone = [s for s in samples if "kind" not in s.info and s.info.get("prompt")]
    training = [s for s in samples if s.info.get("kind") == "training"]
    tables = []
    for expert in dict.fromkeys(s.info.get("expert") for s in reversed(training)):
        mine = [s for s in training if s.info.get("expert") == expert]
        latest: dict[tuple[int, int], SampleFile] = {}
        for s in reversed(mine):  # oldest first: the newest file of an (epoch, prompt) wins
            latest[(s.info.get("epoch", 0), s.info.get("prompt_index", 0))] = s
        epochs = sorted({e for e, _ in latest})
        if len(epochs) > MAX_TRAINING_EPOCHS:  # keep the page small
            step = (len(epochs) - 1) / (MAX_TRAINING_EPOCHS - 1)
            epochs = sorted({epochs[round(i * step)] for i in range(MAX_TRAINING_EPOCHS)})
        prompts = sorted({p for _, p in latest})
        rows = [(epoch, [latest.get((epoch, p)) for p in prompts]) for epoch in epochs]
        tables.append(TrainingSamples(str(expert), prompts, rows))
    return SampleSets(len(samples), compare, standalone[:MAX_GALLERY], tables)


# --- performance -----------------------------------------------------------------------


@dataclass
class ExpertPerformance:
    expert: str
    last_step: int | None  # None: no loss logged yet
    training_seconds: float | None  # seconds_per_step x steps: training only
    seconds_per_step: float | None  # mean measured step time; None: no step time known
    last_loss: float | None
    peak_vram_gib: float | None  # recorded once per epoch, CUDA only
    peak_rss_gib: float | None
    sample_seconds: float | None
    lora_file: Path
    lora_bytes: int | None  # None: not trained
    validation_seconds: float | None = None  # validation.jsonl's seconds, summed


def measured_step_seconds(step_seconds: Series | None) -> float | None:
    """The mean of the steps' own measured times (perf/step_seconds, one per optimiser step,
    the last wins for a step logged twice): training only, so neither a pause between an
    interrupt and its resume nor sampling at an epoch end is in it."""
    if not step_seconds or not step_seconds.values:
        return None
    return sum(step_seconds.values) / len(step_seconds.values)


def wall_clock_step_seconds(
    loss: Series, sample_time: Series | None, validation_seconds: float = 0.0
) -> float | None:
    """For logs without perf/step_seconds: the time between the first and last logged step,
    less the sampling and validation in between, per step (a pause before a resume is
    counted in)."""
    if len(loss.steps) < 2:
        return None
    elapsed = loss.wall_times[-1] - loss.wall_times[0]
    if sample_time and sample_time.values:  # samples rendered between logged steps
        between = [
            v
            for v, w in zip(sample_time.values, sample_time.wall_times, strict=True)
            if loss.wall_times[0] < w < loss.wall_times[-1]
        ]
        elapsed = max(0.0, elapsed - sum(between))
    elapsed = max(0.0, elapsed - validation_seconds)
    return elapsed / (len(loss.steps) - 1)


def expert_performance(
    project: Project,
    logs: dict[str, dict[str, Series]],
    validation: dict[str, list[ValidationPoint]] | None = None,
) -> list[ExpertPerformance]:
    layout = OutputLayout.of(project)
    validation = validation or {}
    result = []
    for expert in project.config.experts:
        tags = logs.get(expert, {})
        points = validation.get(expert, [])
        loss = tags.get("loss")
        sample_time = tags.get("perf/sample_seconds")
        last_step = seconds = per_step = last_loss = None
        if loss and loss.steps:
            per_step = measured_step_seconds(tags.get("perf/step_seconds"))
            if per_step is None:  # logs written before steps were timed
                # validation runs after a step is logged and before the next one: not training
                # time either (step 0, the base model, runs before the first step)
                checked = [p.seconds for p in points if loss.steps[0] <= p.step < loss.steps[-1]]
                per_step = wall_clock_step_seconds(loss, sample_time, sum(checked))
            seconds = per_step * loss.steps[-1] if per_step is not None else None
            last_step, last_loss = loss.steps[-1], loss.values[-1]

        def peak(tag: str, tags=tags) -> float | None:
            series = tags.get(tag)
            return max(series.values) if series and series.values else None

        lora = layout.lora(expert)
        result.append(
            ExpertPerformance(
                expert=expert,
                last_step=last_step,
                training_seconds=seconds,
                seconds_per_step=per_step,
                last_loss=last_loss,
                peak_vram_gib=peak("perf/peak_vram_gib"),
                peak_rss_gib=peak("perf/peak_rss_gib"),
                sample_seconds=sum(sample_time.values)
                if sample_time and sample_time.values
                else None,
                lora_file=lora,
                lora_bytes=lora.stat().st_size if lora.exists() else None,
                validation_seconds=sum(p.seconds for p in points) if points else None,
            )
        )
    return result


# --- everything ------------------------------------------------------------------------


@dataclass
class ReportData:
    config: RecipeConfig  # the effective config (the timestep plot draws its sampler)
    title: str
    recipe_name: str
    project_root: Path
    built: str  # when the report was built, local time
    recipe: RecipeFacts
    dataset_dir: Path
    dataset: list[DatasetRow]
    logs: dict[str, dict[str, Series]]  # expert -> tag -> series
    samples: SampleSets
    performance: list[ExpertPerformance]
    grids: list[SampleGrid] = field(default_factory=list)  # one per prompt
    validation: dict[str, list[ValidationPoint]] = field(default_factory=dict)
    verdict: list[ExpertVerdict] = field(default_factory=list)


def gather(project: Project) -> ReportData:
    """Everything the report shows, read from the project's files."""
    config = project.config
    layout = OutputLayout.of(project)
    logs = {e: read_scalars(layout.logs_dir(e)) for e in config.experts}
    validation = {e: read_validation(layout.validation_log(e)) for e in config.experts}
    validation = {e: points for e, points in validation.items() if points}
    samples = sample_files(project)
    return ReportData(
        config=config,
        title=f"{config.project.name} by {config.project.author}",
        recipe_name=config.recipe,
        project_root=project.root,
        built=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        recipe=recipe_facts(project),
        dataset_dir=project.dataset_dir,
        dataset=dataset_rows(project),
        logs=logs,
        samples=sample_sets(project),
        performance=expert_performance(project, logs, validation),
        grids=sample_grids(samples),
        validation=validation,
        verdict=read_verdict(layout.verdict),
    )
