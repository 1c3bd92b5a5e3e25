"""SIGINT / SIGTERM during `wanlora train` in one process (run/signals.py), at exact points
reached through the fault rules (faults.py): the state of the step is saved (or nothing,
before the first step), Interrupted says what, and the resumed run gives the LoRAs an
uninterrupted run gives, bit for bit, on the CPU. The signals are real: the fault action
sends this process the signal and the installed handlers act on it.

Worker processes and the CLI: tests/test_signals_workers.py.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import pytest

from signal_runs import (
    CPU,
    STEPS,
    FaultRule,
    assert_same_loras,
    fresh_copy,
    loras,
    one_torch_thread,
)
from wanlora.outputs import lora_path
from wanlora.recipes import load_project
from wanlora.run.signals import Interrupted
from wanlora.run.training import run_training
from wanlora.sampling.epoch_samples import TrainingMonitor
from wanlora.train.state import latest_state_dir, read_state_meta

BOTH = ("high", "low")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def template(signal_reference):
    """The uninterrupted reference (conftest.py, shared with test_signals_workers.py)."""
    return signal_reference


@dataclass(frozen=True)
class Point:
    rule: str
    stopped: tuple[str, int] | None  # (expert, step) whose state the stop saved; None: none
    experts: tuple[str, ...] = ("high",)  # which experts the runs train
    sample: bool = False  # epoch-end samples (a TrainingMonitor) on
    cache: bool = True  # start with the template's cache (False: caching is interrupted)
    aborted: bool = False  # a second signal
    kept: tuple[tuple[str, int, bool], ...] = ()  # (expert, step, finished) on disk after


POINTS = {
    # caching and loading: nothing to save, stop at once
    "caching": Point("cache_write:1:sigint", None, cache=False),
    "caching-3rd-entry": Point("cache_write:3:sigterm", None, cache=False),
    "load-high": Point("model_load:1:sigterm", None),
    "load-low": Point("model_load[low]:1:sigint", None, BOTH, kept=(("high", 4, True),)),
    # until the first step is reported, too: the run restarts from scratch
    "step-1-micro-batch": Point("micro_batch:1:sigint", None),
    "step-1": Point("step:1:sigterm", None),
    # inside gradient accumulation: the step finishes, its state is saved
    "mid-accumulation": Point("micro_batch:3:sigterm", ("high", 2)),
    "mid-accumulation-last-step": Point("micro_batch[low]:7:sigint", ("low", 4), BOTH),
    # at optimiser steps
    "step-2": Point("step:2:sigterm", ("high", 2)),
    "epoch-2-first-step": Point("step:3:sigint", ("high", 3)),
    "high-last-step": Point("step[high]:4:sigint", ("high", 4)),
    "low-first-step": Point("step[low]:1:sigterm", None, BOTH, kept=(("high", 4, True),)),
    "low-step-2": Point("step[low]:2:sigint", ("low", 2), BOTH),
    "very-last-step": Point("step:8:sigterm", ("low", 4), BOTH),
    # epoch ends: before and during the samples
    "epoch-end": Point("epoch_end:1:sigint", ("high", 2), sample=True),
    "sampling": Point("sample:1:sigterm", ("high", 2), sample=True),
    "last-sampling": Point("sample[low]:2:sigint", ("low", 4), BOTH, sample=True),
    # a state save in progress finishes, then the run stops
    "state-save-begins": Point("state_save:1:sigint", ("high", 3)),
    "state-half-written": Point("state_write:1:sigterm", ("high", 3)),
    "state-lora-file": Point("atomic_write[*/state/*]:1:sigint", ("high", 3)),
    # a second signal aborts at once; the last saved state resumes
    "abort-in-stop-save": Point("step:2:sigint,state_save:1:sigint", None, aborted=True),
    "abort-mid-step": Point(
        "micro_batch:7:sigint,micro_batch:8:sigterm", None, aborted=True, kept=(("high", 3, False),)
    ),
    "abort-low-save": Point(
        "step[low]:2:sigterm,state_write[*/state/low/*]:1:sigint", None, BOTH, aborted=True,
        kept=(("high", 4, True),),
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(POINTS))
def test_a_signal_stops_cleanly_and_the_resume_is_bit_identical(template, tmp_path, name):
    point = POINTS[name]
    root = fresh_copy(template, tmp_path / "run", cache=point.cache)

    def train():
        project = load_project(root)
        monitor = TrainingMonitor(project, CPU) if point.sample else None
        try:
            return run_training(project, experts=list(point.experts), device=CPU,
                                on_epoch_end=monitor)  # fmt: skip
        finally:
            if monitor is not None:
                monitor.close()

    with FaultRule(point.rule), pytest.raises(Interrupted) as stopped:
        train()
    exc = stopped.value
    signum = signal.SIGINT if point.rule.split(",")[0].endswith("sigint") else signal.SIGTERM
    assert exc.signum == signum
    assert exc.exit_code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert exc.aborted == point.aborted
    project = load_project(root)
    if point.stopped is None:
        assert exc.stopped == ()
    else:
        expert, step = point.stopped
        assert (exc.expert, exc.step) == (expert, step)
        assert exc.state_dir == latest_state_dir(project.output_dir, expert)
        meta = read_state_meta(exc.state_dir)
        assert (meta.step, meta.finished) == (step, False)
        assert not lora_path(project, expert).exists()
        assert f"{expert} stopped after step {step}, its state is saved in {exc.state_dir}" in exc.message()
    want = set(point.kept) | ({(*point.stopped, False)} if point.stopped else set())
    if point.stopped and point.stopped[0] == "low":
        want.add(("high", STEPS, True))  # trained before low started
    assert {(s.expert, s.step, s.finished) for s in exc.kept} == want
    for expert in point.experts:  # no half-written state or temp file
        root_dir = project.output_dir / "state" / expert
        assert not root_dir.is_dir() or not list(root_dir.glob(".tmp-*"))

    (result, *rest) = train()  # the resume
    assert all(r.steps == STEPS for r in [result, *rest])
    assert_same_loras(loras(template, point.experts), loras(root, point.experts))


def test_the_message_names_what_was_saved(template, tmp_path):
    root = fresh_copy(template, tmp_path / "run")
    with FaultRule("model_load[low]:1:sigint"), pytest.raises(Interrupted) as stopped:
        run_training(load_project(root), device=CPU)
    high_state = latest_state_dir(load_project(root).output_dir, "high")
    assert stopped.value.message() == (
        "interrupted (SIGINT): stopped before the first step (caching or loading): nothing "
        "to save; high already trained; the cache entries written so far are kept"
    )
    assert read_state_meta(high_state).finished
    with FaultRule("micro_batch:7:sigint,micro_batch:8:sigterm"), pytest.raises(Interrupted) as ab:
        run_training(load_project(root), device=CPU, restart=True, overwrite=True)
    state = latest_state_dir(load_project(root).output_dir, "high")
    assert ab.value.message() == (
        "interrupted (SIGINT): stopped at once (second signal); the last saved state "
        f"resumes: high at step 3 in {state}; the cache entries written so far are kept"
    )
