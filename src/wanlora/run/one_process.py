"""A run in this process under the signal handlers (signals.py): the experts one by one.

Each expert starts in the `starting` phase (a signal stops at once: nothing to save), steps
(a signal stops at the next step, its state saved), and its epoch ends stop at once. A stop
becomes `Interrupted` naming the saved state; `kept_states` says what is on disk for the
CLI's message after any interruption.
"""

from __future__ import annotations

import torch

from ..recipes import Project
from ..train.callbacks import EpochCallback, ExpertResult, StepCallback, StopTraining
from ..train.state import latest_state_dir, read_state_meta
from .experts import check_experts, train_project
from .signals import Interrupted, Saved, StopRequest


def train_in_this_process(
    project: Project,
    experts: list[str] | None,
    stop: StopRequest,
    *,
    device: torch.device | None,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
    **options,
) -> list[ExpertResult]:
    """train_project, one expert at a time, each stoppable by a signal as above."""
    names = experts or list(project.config.experts)
    check_experts(project, names)
    results: list[ExpertResult] = []
    for name in names:
        stop.expert_done()  # this expert's caching and loading: a signal stops at once
        try:
            results += train_project(
                project,
                [name],
                device=device,
                on_step=stop.step_callback(on_step),
                on_epoch_end=stop.epoch_callback(on_epoch_end),
                **options,
            )
        except StopTraining:
            if stop.signum is None or stop.last is None:
                raise  # a callback's own stop, not a signal's
            saved = saved_state(project, stop.last.expert)
            raise Interrupted(stop.signum, stopped=(saved,), kept=kept_states(project)) from None
        if stop.signum is not None and name != names[-1]:  # arrived during the final save
            raise Interrupted(stop.signum, kept=kept_states(project))
    return results


def saved_state(project: Project, expert: str) -> Saved | None:
    """The newest complete state of `expert`, or None."""
    state_dir = latest_state_dir(project.output_dir, expert)
    if state_dir is None:
        return None
    meta = read_state_meta(state_dir)
    return Saved(expert, meta.step, state_dir, meta.finished)


def kept_states(project: Project) -> tuple[Saved, ...]:
    """Every expert's newest state on disk: what the next `wanlora train` resumes."""
    states = (saved_state(project, e) for e in project.config.experts)
    return tuple(s for s in states if s is not None)


def with_kept_states(exc: Interrupted, project: Project) -> Interrupted:
    """`exc` (raised by a handler, which knows no project) with the project's states."""
    if not exc.kept:
        exc.kept = kept_states(project)
    return exc
