"""The report's s/step is the measured step time: a real run (tiny models) interrupted by
SIGINT, left paused, then resumed; the pause, the reload and the epoch-end sampling are not
in it (they were, when s/step was the wall time between the first and last logged step)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import tomli_w
import torch

from wanlora import faults
from wanlora.demo import create_demo_project
from wanlora.outputs import OutputLayout
from wanlora.recipes import load_project
from wanlora.report import read_scalars
from wanlora.report.data import expert_performance, wall_clock_step_seconds
from wanlora.report.render import _performance_cells
from wanlora.run.signals import Interrupted
from wanlora.run.training import run_training
from wanlora.sampling.epoch_samples import TrainingMonitor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

IMAGES = 4  # 4 steps per epoch, 2 epochs: 8 steps (the high expert only)
PAUSE = 3.0  # seconds between the interrupt and the resume


def small_demo(root: Path) -> Path:
    """The demo with 4 images, 2 epochs and a sample rendered at the second epoch's end."""
    create_demo_project(root, epochs=2)
    for image in sorted((root / "dataset").glob("*.png"))[IMAGES:]:
        image.unlink()
        image.with_suffix(".txt").unlink(missing_ok=True)
    toml = root / "wanlora.toml"
    data = tomllib.loads(toml.read_text(encoding="utf-8"))
    data["training"].update(max_train_epochs=2, save_state_every_n_steps=1000)
    data["sample"]["every_n_epochs"] = 2
    toml.write_text(tomli_w.dumps(data), encoding="utf-8")
    return root


def train(root: Path) -> None:
    """`wanlora train` on the CPU: the run with its epoch-end monitor (memory, samples)."""
    project = load_project(root)
    monitor = TrainingMonitor(project, "cpu")
    try:
        run_training(
            project, experts=["high"], device=torch.device("cpu"), on_epoch_end=monitor
        )
    finally:
        monitor.close()


def test_a_resumed_run_reports_the_measured_step_time(tmp_path, monkeypatch):
    root = small_demo(tmp_path / "demo")
    monkeypatch.setenv(faults.ENV, "step:3:sigint")
    faults.reset()
    with pytest.raises(Interrupted):
        train(root)
    monkeypatch.delenv(faults.ENV)
    faults.reset()
    time.sleep(PAUSE)  # the user goes for a coffee
    train(root)

    project = load_project(root)
    layout = OutputLayout.of(project)
    logs = {e: read_scalars(layout.logs_dir(e)) for e in project.config.experts}
    high = next(p for p in expert_performance(project, logs) if p.expert == "high")
    tags = logs["high"]
    measured = tags["perf/step_seconds"].values
    assert len(measured) >= 7  # every step but perhaps the interrupted one
    assert high.seconds_per_step == pytest.approx(sum(measured) / len(measured))
    assert high.training_seconds == pytest.approx(high.seconds_per_step * 8)
    assert tags["perf/sample_seconds"].values  # samples were rendered, and left out

    # the old estimate spread the pause over the steps; the measured time has none of it
    wall = wall_clock_step_seconds(tags["loss"], tags.get("perf/sample_seconds"))
    spread = (wall - high.seconds_per_step) * (len(tags["loss"].steps) - 1)
    assert spread >= PAUSE * 0.9
    assert f"{high.seconds_per_step:.2f} s" in _performance_cells(high)
