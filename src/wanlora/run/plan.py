"""What `wanlora train` will do, decided and said before any work.

The project is compared with its last run (changes.py) and one of five plans follows:

    first     no run yet: run 1 trains the experts
    new       the last run finished (or failed) and an edit changes what it trained: a new
              run trains the experts the edits touch; the others' LoRAs are carried over
              unchanged; the last run is kept in output/runs/<N>/. `--new-run` forces it.
    continue  no edit changes the result: the last run goes on (an interrupted expert
              resumes from its state, one not trained yet starts)
    nothing   the last run finished and no edit changes the result
    refuse    the last run was interrupted and an edit changes the result: a resume would
              mix two settings, a new run would drop the work done; the user says which

Only reads: `wanlora train --dry-run` prints a plan and exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WanloraError
from ..outputs import OutputLayout
from ..recipes import Project
from ..train.callbacks import ExpertResult
from ..train.state import latest_state_dir, read_state_meta
from .adopt import adopted_changes, last_run
from .changes import ALL, Change, changes_since
from .records import FAILED, FINISHED, INTERRUPTED, RUNNING, RunRecord, Snapshot, take_snapshot


class PlanRefused(WanloraError):
    """An interrupted run and edits that change its result: exit 2, the user decides."""

    exit_code = 2


@dataclass
class Plan:
    action: str  # first | new | continue | nothing | refuse
    run: int  # the run this `train` works on (the new one for first/new)
    layout: OutputLayout
    snapshot: Snapshot
    previous: RunRecord | None = None  # the last run, compared with
    changes: list[Change] = field(default_factory=list)
    train: list[str] = field(default_factory=list)  # experts trained now
    carried: list[str] = field(default_factory=list)  # new run: LoRAs carried over unchanged
    done: list[str] = field(default_factory=list)  # continue/nothing: already finished
    forced: bool = False  # --new-run

    @property
    def kept_dir(self) -> Path | None:
        """Where the previous run is kept once a new run starts."""
        if self.previous is None or self.action not in ("new", "refuse"):
            return None
        return self.layout.kept_run(self.previous.number).root

    def lines(self, project: Project) -> list[str]:
        """The plan as `wanlora train` prints it."""
        prev = self.previous
        out = []
        if prev is not None and self.changes:
            out.append(f"changed since run {prev.number} ({status_of(prev)}):")
            out += [f"  {c.text}{_scope(c)}" for c in self.changes]
        if self.action == "first":
            out.append(f"run 1: the first run of this project: training {_and(self.train)}")
        elif self.action == "new":
            assert prev is not None
            why = "--new-run" if self.forced else "; ".join(
                c.text for c in self.changes if c.retrains
            )
            out.append(
                f"{why}: starting run {self.run}; run {prev.number} is kept in "
                f"{self.kept_dir}"
            )
            out.append(f"  {_and(self.train)}: trained from the start")
            for expert in self.carried:
                why = "no edit touches it"
                if any(c.touches(expert) for c in self.changes):
                    why = "not asked for with --expert; train it with `--expert` too"
                out.append(f"  {expert}: carried over from run {prev.number} unchanged ({why})")
            if not self.forced:
                out.append("  the cache computes again only what changed")
        elif self.action == "continue":
            assert prev is not None
            verb = "resuming" if status_of(prev) != FINISHED else "continuing"
            out.append(f"run {prev.number} is {status_of(prev)}: {verb} it")
            out += [f"  {e}: already trained" for e in self.done]
            out += [f"  {e}: {_start(self.layout, e)}" for e in self.train]
        elif self.action == "nothing":
            assert prev is not None
            if self.changes:
                out.append("these edits change no trained number: nothing to train; "
                           f"`wanlora sample {project.root}` renders samples with them")  # fmt: skip
            else:
                out.append(f"nothing changed since run {prev.number}")
            out.append(f"{_and(self.done)}: already trained (run {prev.number}):")
            out += [f"  {self.layout.lora(e)}" for e in self.done]
            if self.layout.report.exists():
                out.append(f"report: {self.layout.report}")
        return out

    def skipped_results(self) -> list[ExpertResult]:
        """The experts this `train` does not train: already done, or carried over."""
        prev = self.previous
        results = []
        for expert in self.done + self.carried:
            record = prev.experts[expert] if prev is not None else None
            steps = record.steps if record is not None and record.steps is not None else 0
            loss = record.final_loss if record is not None else None
            results.append(ExpertResult(expert, self.layout.lora(expert), steps, loss, skipped=True))
        return results

    def refusal(self, project: Project) -> PlanRefused:
        assert self.previous is not None
        n = self.previous.number
        return PlanRefused(
            f"run {n} was interrupted, and these edits change what it trains",
            f"undo them to resume run {n}, or start run {n + 1} with "
            f"`wanlora train {project.root} --new-run` (run {n} is kept)",
        )


def make_plan(project: Project, experts: list[str] | None = None, *, new_run: bool = False) -> Plan:
    """Compare the project with its last run and decide what training does (reads only)."""
    layout = OutputLayout.of(project)
    names = list(project.config.experts)
    wanted = [e for e in names if e in (experts or names)]
    snapshot = take_snapshot(project)
    prev = last_run(project, layout)
    if prev is None:
        return Plan("first", 1, layout, snapshot, train=wanted)
    old = prev.snapshot
    changes = changes_since(old, snapshot) if old else adopted_changes(project, prev)
    finished = prev.finished_experts()
    touched = [e for e in wanted if any(c.touches(e) for c in changes)]
    plan = Plan("nothing", prev.number, layout, snapshot, prev, changes)
    if new_run or (touched and status_of(prev) in (FINISHED, FAILED)):
        plan.action, plan.run, plan.forced = "new", prev.number + 1, new_run
        plan.train = wanted if new_run else [e for e in wanted if e in touched or e not in finished]
        plan.carried = [e for e in finished if e not in plan.train]
    elif touched:
        plan.action = "refuse"
    else:
        plan.done = [e for e in names if e in finished]
        plan.train = [e for e in wanted if e not in finished]
        plan.action = "continue" if plan.train else "nothing"
    return plan


def status_of(record: RunRecord) -> str:
    """A record's status as it stands: "running" found under our lock means killed."""
    return INTERRUPTED if record.status == RUNNING else record.status


def _scope(change: Change) -> str:
    if not change.retrains:
        return "  (retrains nothing)"
    if ALL in change.retrains:
        return ""
    return f"  ({_and(sorted(change.retrains))} only)"


def _start(layout: OutputLayout, expert: str) -> str:
    state = latest_state_dir(layout.root, expert)
    if state is None:
        return "starts"
    return f"resumes after step {read_state_meta(state).step}"


def _and(names: list[str]) -> str:
    return " and ".join(names) if len(names) <= 2 else ", ".join(names)
