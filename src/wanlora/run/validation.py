"""Validation during training, wired from the run layer, and the verdict after it.

    held_out_split     `[validation] items` -> the items that train and the ones only
                       validated on (prepare_data in experts.py calls it)
    validation_monitor one expert's ValidationMonitor for run_expert, or None (validation
                       off, or a process that does not write the run's files)
    ValidationMonitor  on_step + on_epoch_end: at due epochs a point of the expert's fixed
                       set (wanlora.train.validation) into logs/<expert>/validation.jsonl
                       and TensorBoard (validation/loss, validation/effect,
                       perf/validation_seconds); the first point is step 0, the base model
    write_verdict      after training: each expert's verdict (wanlora.train.verdict) from
                       its validation log and the project's settings (the [sample]
                       strengths of the samples during training among them) into
                       output/verdict.json; every caller (training.py, launch.py) gets
                       the same causes, as nothing but the project is passed
    verdict_lines      what `wanlora train` prints at the end

The cadence: every `[validation] every_n_epochs` epochs (unset: about ten points a run,
every max(1, max_train_epochs // 10)), and always at the last epoch. A resumed run keeps
the points before its resume step and adds its own; a fresh run starts a new log. The time
a point takes is its record's `seconds`: never part of a step's s/step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..dataset.items import DatasetItem
from ..errors import WanloraError
from ..fsutil import atomic_write_text
from ..outputs import OutputLayout
from ..recipes import Project
from ..train.callbacks import StepReport
from ..train.data import TrainingData
from ..train.setup import expert_dit
from ..train.validation import Validator, build_validation_set
from ..train.verdict import expert_verdict, training_sample_strengths
from .callbacks import summary_writer


def held_out_split(project: Project, items: list[DatasetItem]) -> tuple[list[int], list[int]]:
    """(indices that train, indices held out): an item is held out when `[validation] items`
    names it, or the video its clips come from; nothing is held out with validation off."""
    settings = project.config.validation
    names = set(settings.items) if settings.enabled else set()
    known = {item.name for item in items} | {item.image_path.stem for item in items}
    unknown = sorted(names - known)
    if unknown:
        examples = ", ".join(sorted({item.name for item in items})[:3])
        raise WanloraError(
            f"{project.config_file}: [validation] items names {unknown[0]!r}, which is not a "
            "dataset item",
            f"use item names (image file stems, or clip names), e.g. {examples}",
        )
    held = [i for i, item in enumerate(items) if {item.name, item.image_path.stem} & names]
    if len(held) == len(items):
        raise WanloraError(
            f"{project.config_file}: [validation] items holds out every dataset item",
            "name only a few items there; the others train",
        )
    return [i for i in range(len(items)) if i not in set(held)], held


def read_points(path: Path) -> list[dict]:
    """The records of a validation log (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_points(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def validation_monitor(
    project: Project, expert: str, data: TrainingData, device: torch.device, *, fresh: bool
) -> ValidationMonitor | None:
    """run_expert's validation callback: None with validation off (a fresh run's old log is
    removed then, so no stale verdict is made from it)."""
    if not project.config.validation.enabled:
        log = OutputLayout.of(project).validation_log(expert)
        if fresh and log.exists():
            log.unlink()
        return None
    return ValidationMonitor(project, expert, data, device, fresh=fresh)


class ValidationMonitor:
    """One expert's validation points at epoch ends. Call `on_step` at every step (it keeps
    the step count and, at the first step, drops the log's points a resume redoes)."""

    def __init__(
        self,
        project: Project,
        expert: str,
        data: TrainingData,
        device: torch.device,
        *,
        fresh: bool,
    ):
        config = project.config
        settings = config.validation
        samples = data.held_out_samples or data.samples
        seed = config.training.seed if settings.seed is None else settings.seed
        ti2v = config.task == "ti2v-5B"  # its image-to-video half is validated too
        vset = build_validation_set(
            samples,
            config.experts[expert],
            settings.timesteps,
            seed,
            settings.max_items,
            i2v_share=config.training.ti2v_i2v_share if ti2v else 0.0,
            mask_first=config.training.ti2v_mask_first_frame,
        )
        self.validator = Validator(vset, device, expert_dit(project, expert, config)[1])
        self.expert, self.fresh = expert, fresh
        epochs = config.training.max_train_epochs
        self.every = settings.every_n_epochs or max(1, epochs // 10)
        self.last_epoch = epochs
        layout = OutputLayout.of(project)
        self.log_path, self.log_dir = layout.validation_log(expert), layout.logs_dir(expert)
        self.step = 0
        self.seconds = 0.0  # validation time in this process
        self._started = False
        self._writer = None
        self._tried_writer = False

    def due(self, epochs_done: int) -> bool:
        return epochs_done % self.every == 0 or epochs_done == self.last_epoch

    def on_step(self, report: StepReport) -> None:
        if not self._started:  # fresh: a new log; resumed: the points up to the resume step
            self._started = True
            old = read_points(self.log_path)
            kept = [] if self.fresh else [r for r in old if r["step"] < report.step]
            if kept != old:
                write_points(self.log_path, kept)
        self.step = report.step

    def __call__(self, expert: str, epochs_done: int, model: torch.nn.Module) -> None:
        if expert != self.expert or not self.due(epochs_done):
            return
        records = read_points(self.log_path)
        new = []
        if not any(r["step"] == 0 for r in records):  # the base model comes first
            started = time.perf_counter()
            base = self.validator.base_point(model)
            new.append(self._record(0, 0, base, time.perf_counter() - started))
        started = time.perf_counter()
        point = self.validator.point(model)
        new.append(self._record(self.step, epochs_done, point, time.perf_counter() - started))
        write_points(self.log_path, records + new)
        self._log(new)

    def _record(self, step: int, epoch: int, point, seconds: float) -> dict:
        self.seconds += seconds
        vset = self.validator.vset
        return {
            "expert": self.expert,
            "step": step,
            "epoch": epoch,
            "loss": point.loss,
            "effect": point.effect,
            "timesteps": list(vset.timesteps),
            "items": vset.items,
            "seconds": round(seconds, 3),
        }

    def _log(self, records: list[dict]) -> None:
        if not self._tried_writer:
            self._tried_writer = True
            self._writer = summary_writer(self.log_dir)
        if self._writer is None:
            return
        for r in records:
            self._writer.add_scalar("validation/loss", r["loss"], r["step"])
            self._writer.add_scalar("validation/effect", r["effect"], r["step"])
            self._writer.add_scalar("perf/validation_seconds", r["seconds"], r["step"])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None


def write_verdict(project: Project) -> dict | None:
    """Each expert's verdict from its validation log into output/verdict.json; returns it
    (None, and an old verdict.json removed, when no expert has a trained point)."""
    layout = OutputLayout.of(project)
    sample_strengths = training_sample_strengths(project.config)
    experts = {}
    for name in project.config.experts:
        points = read_points(layout.validation_log(name))
        verdict = expert_verdict(project.config, name, points, sample_strengths)
        if verdict is not None:
            experts[name] = verdict.as_json()
    if not experts:
        layout.verdict.unlink(missing_ok=True)
        return None
    verdict = {"experts": experts}
    atomic_write_text(layout.verdict, json.dumps(verdict, indent=2) + "\n")
    return verdict


def verdict_lines(project: Project) -> list[str]:
    """The verdict as `wanlora train` prints it, with each expert's validation time."""
    layout = OutputLayout.of(project)
    if not layout.verdict.exists():
        return []
    lines = []
    for name, v in json.loads(layout.verdict.read_text(encoding="utf-8"))["experts"].items():
        seconds = sum(r["seconds"] for r in read_points(layout.validation_log(name)))
        lines.append(f"{name}: {v['text']} (validation took {seconds:.1f} s)")
    return lines
