"""The last run of a project, including one trained before runs were recorded.

A project trained by an earlier wanlora has LoRAs and states in output/ but no run.json.
Those outputs become run 1 (`adopted`): an expert with a LoRA file is finished, one with
only an unfinished state is interrupted. What run 1 was trained from is not known field by
field; its states still carry a hash of the training settings, and that is compared
(`adopted_changes`). Nothing is written until a run starts (kept.begin writes the record).
"""

from __future__ import annotations

import datetime as _dt
import json

from ..fsutil import atomic_path
from ..lora.file import read_lora_file
from ..outputs import OutputLayout
from ..recipes import Project
from ..train.state import latest_state_dir, legacy_recipe_hash, read_state_meta, recipe_hash
from .changes import Change
from .records import FINISHED, INTERRUPTED, ExpertRecord, RunRecord, read_record


def last_run(project: Project, layout: OutputLayout) -> RunRecord | None:
    """output/run.json, or the outputs of a run from before records (adopted), or None."""
    record = read_record(layout.run_record)
    return record if record is not None else adopted_record(project, layout)


def adopted_record(project: Project, layout: OutputLayout) -> RunRecord | None:
    experts = {}
    for expert in project.config.experts:
        state = latest_state_dir(layout.root, expert)
        meta = read_state_meta(state) if state is not None else None
        lora = layout.lora(expert)
        if lora.exists():
            steps = meta.step if meta is not None else _lora_steps(lora)
            experts[expert] = ExpertRecord(FINISHED, steps)
        elif meta is not None:
            experts[expert] = ExpertRecord(INTERRUPTED, meta.step)
    if not experts:
        return None
    done = all(r.status == FINISHED for r in experts.values())
    started = min(_mtime(layout.lora(e)) or _mtime(layout.state_dir(e)) or "" for e in experts)
    return RunRecord(
        1, FINISHED if done else INTERRUPTED, started, experts=experts, adopted=True
    )


def adopted_changes(project: Project, record: RunRecord) -> list[Change]:
    """An adopted run's settings are known only as its states' hashes: compare those."""
    found = []
    for expert in record.experts:
        state = latest_state_dir(project.output_dir, expert)
        if state is None:
            continue  # no state kept: nothing to compare with, the LoRA stands
        stored = read_state_meta(state).recipe_hash
        now = {recipe_hash(project.config, expert), legacy_recipe_hash(project.config, expert)}
        if stored not in now:
            found.append(
                Change(
                    f"the {expert} expert's training settings (run 1 predates run records: "
                    "which fields is not known)",
                    frozenset({expert}),
                )
            )
    return found


def rekey_states(project: Project, record: RunRecord) -> None:
    """An adopted run going on: its states' settings hash, from an earlier version's
    formula, is written in today's, so the resume check accepts them (adopted_changes has
    shown the settings are the same)."""
    for expert in record.experts:
        state = latest_state_dir(project.output_dir, expert)
        if state is None:
            continue
        meta_file = state / "meta.json"
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta["recipe_hash"] == legacy_recipe_hash(project.config, expert):
            meta["recipe_hash"] = recipe_hash(project.config, expert)
            with atomic_path(meta_file) as tmp:
                tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _lora_steps(path) -> int | None:
    try:
        return int(read_lora_file(path)[1].get("ss_steps", ""))
    except ValueError:
        return None


def _mtime(path) -> str | None:
    if not path.exists():
        return None
    stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime)
    return stamp.isoformat(timespec="seconds")
