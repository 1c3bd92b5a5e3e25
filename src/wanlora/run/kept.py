"""Runs kept: the previous run moved aside when a new one starts, and the record kept.

    begin      a new run: the previous run's files move into output/runs/<N>/ (renames;
               its LoRAs as hard links, so output/<LoRA>.safetensors stays loadable), the
               carried experts' state and logs are linked back, the new record is written.
               The same run going on: its record says "running" again.
    recorded   around the training: the record ends finished, interrupted (a signal) or
               failed (anything else), with each expert's steps and final loss. A new run
               that ends before it saved anything is undone (`rollback`): the previous
               run moves back and no run number is used up.

Hard links cost no disk and are safe here: a LoRA is never written in place, always to a
new file renamed over the name (fsutil.atomic_path), so the kept link keeps the old bytes.
Where hard links are not possible (some network or FAT file systems), a copy is made.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..fsutil import atomic_path
from ..outputs import OutputLayout
from ..recipes import Project
from ..train.callbacks import ExpertResult
from ..train.state import latest_state_dir, read_state_meta
from .adopt import rekey_states
from .plan import Plan
from .records import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    ExpertRecord,
    RunRecord,
    now,
    read_record,
    write_record,
)
from .signals import Interrupted


def begin(project: Project, plan: Plan) -> RunRecord:
    """Set the project's output/ up for the plan's run and write its record ("running")."""
    layout, prev = plan.layout, plan.previous
    if plan.action in ("first", "new"):
        if prev is not None:
            keep(layout, prev)
        experts = {e: ExpertRecord() for e in plan.train}
        for expert in plan.carried:
            assert prev is not None
            carry(layout, prev.number, expert)
            old = prev.experts[expert]
            experts[expert] = ExpertRecord(
                FINISHED, old.steps, old.final_loss, old.from_run or prev.number
            )
        experts = {e: experts[e] for e in project.config.experts if e in experts}  # recipe order
        s = plan.snapshot
        record = RunRecord(plan.run, RUNNING, now(), None, s.settings, s.dataset, s.models, experts)
    else:  # the same run goes on
        assert prev is not None
        record = prev
        if record.adopted:
            rekey_states(project, record)
        if record.snapshot is None:  # adopted: today's is what the hashes matched
            s = plan.snapshot
            record.settings, record.dataset, record.models = s.settings, s.dataset, s.models
        record.status, record.ended, record.error = RUNNING, None, None
        for expert in plan.train:
            record.experts.setdefault(expert, ExpertRecord())
        _unlink_kept_loras(layout, record, plan.train)
    for expert in plan.train:
        record.experts[expert].status = RUNNING
    write_record(layout.run_record, record)
    return record


@contextlib.contextmanager
def recorded(project: Project, plan: Plan) -> Iterator[list[ExpertResult]]:
    """Begin the plan's run; the body appends each trained expert's result; the record
    ends finished, interrupted or failed."""
    record = begin(project, plan)
    results: list[ExpertResult] = []
    layout = plan.layout
    try:
        yield results
    except BaseException as exc:
        status = INTERRUPTED if isinstance(exc, (Interrupted, KeyboardInterrupt)) else FAILED
        if plan.action == "new" and not _saved_anything(layout, plan.train):
            assert plan.previous is not None
            rollback(layout, plan.previous.number)
            raise
        _end(layout, record, status, results, plan.train)
        if status == FAILED:
            record.error = f"{type(exc).__name__}: {exc}"[:500]
            write_record(layout.run_record, record)
        raise
    _end(layout, record, FINISHED, results, plan.train)


def _end(layout, record, status, results, trained) -> None:
    by_expert = {r.expert: r for r in results}
    for expert in trained:
        entry = record.experts[expert]
        result = by_expert.get(expert)
        if result is not None:
            entry.status, entry.steps = FINISHED, result.steps
            entry.final_loss = result.final_loss if result.final_loss is not None else entry.final_loss
            continue
        entry.status = status
        state = latest_state_dir(layout.root, expert)
        entry.steps = read_state_meta(state).step if state is not None else 0
    done = all(r.status == FINISHED for r in record.experts.values())
    record.status = FINISHED if status == FINISHED and done else status
    record.ended = now()
    write_record(layout.run_record, record)


def keep(layout: OutputLayout, record: RunRecord) -> Path:
    """Move run `record` (the one in output/ now) into output/runs/<N>/; returns that folder.
    Cut short by a kill, it is finished by the next call (the record moves last)."""
    kept = layout.kept_run(record.number)
    kept.root.mkdir(parents=True, exist_ok=True)
    for expert in layout.lora_names:
        if layout.lora(expert).exists() and not kept.lora(expert).exists():
            link_or_copy(layout.lora(expert), kept.lora(expert))
    if not layout.run_record.exists():  # adopted: its record is written where it is kept
        write_record(kept.run_record, record)
    for here, there in zip(layout.run_files(), kept.run_files(), strict=True):
        if here.exists() and not there.exists():
            os.rename(here, there)
    return kept.root


def carry(layout: OutputLayout, number: int, expert: str) -> None:
    """An expert no edit touches: its state and loss curve from run `number` into the new
    run (hard links), beside its LoRA, which stays where it is."""
    kept = layout.kept_run(number)
    for src, dst in ((kept.state_dir(expert), layout.state_dir(expert)),
                     (kept.logs_dir(expert), layout.logs_dir(expert))):  # fmt: skip
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst, copy_function=link_or_copy)


def rollback(layout: OutputLayout, number: int) -> None:
    """Undo `keep` for a new run that saved nothing: run `number` back into output/."""
    kept = layout.kept_run(number)
    for here, there in zip(layout.run_files(), kept.run_files(), strict=True):
        if not there.exists():
            continue
        if here.is_dir():  # the new run's empty beginnings (its log folders, carried links)
            shutil.rmtree(here)
        elif here.exists():
            here.unlink()
        os.rename(there, here)
    for expert in layout.lora_names:
        if kept.lora(expert).exists():
            if not layout.lora(expert).exists():
                os.rename(kept.lora(expert), layout.lora(expert))
            else:
                kept.lora(expert).unlink()
    with contextlib.suppress(OSError):
        kept.root.rmdir()
        layout.runs_root.rmdir()


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links on this file system: a copy, written atomically
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def kept_records(layout: OutputLayout) -> list[RunRecord]:
    """Every run's record, oldest first: the kept ones, then the current one."""
    records = []
    if layout.runs_root.is_dir():
        for folder in layout.runs_root.iterdir():
            if folder.name.isdigit():
                record = read_record(layout.kept_run(int(folder.name)).run_record)
                if record is not None:
                    records.append(record)
    current = read_record(layout.run_record)
    if current is not None:
        records.append(current)
    return sorted(records, key=lambda r: r.number)


def _saved_anything(layout: OutputLayout, experts: list[str]) -> bool:
    if any(latest_state_dir(layout.root, e) is not None for e in experts):
        return True
    return layout.samples_dir.is_dir() and any(layout.samples_dir.iterdir())


def _unlink_kept_loras(layout: OutputLayout, record: RunRecord, experts: list[str]) -> None:
    """An expert not finished in this run whose output/ LoRA is the previous run's (the
    same file as the kept one): the name is freed so this run's LoRA can be written (the
    previous run keeps its link)."""
    if record.number <= 1:
        return
    kept = layout.kept_run(record.number - 1)
    for expert in experts:
        here, there = layout.lora(expert), kept.lora(expert)
        if here.exists() and there.exists() and filecmp.cmp(here, there, shallow=False):
            here.unlink()
