"""`wanlora runs`: every run kept, and how each differs from the one before."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..outputs import OutputLayout
from ..recipes import Project
from .changes import changes_since
from .kept import kept_records
from .plan import status_of
from .records import RunRecord


@dataclass
class RunRow:
    number: int
    started: str
    ended: str | None
    status: str
    folder: str  # where its files are: output/ for the current run, output/runs/<N>/ else
    experts: dict[str, dict] = field(default_factory=dict)  # status, steps, loss, from_run
    differences: list[str] = field(default_factory=list)  # from the run before

    def as_json(self) -> dict:
        return self.__dict__


def run_rows(project: Project) -> list[RunRow]:
    layout = OutputLayout.of(project)
    records = kept_records(layout)
    rows = []
    for i, record in enumerate(records):
        current = i == len(records) - 1
        folder = layout.root if current else layout.kept_run(record.number).root
        rows.append(
            RunRow(
                record.number,
                record.started,
                record.ended,
                status_of(record) if current else record.status,
                str(folder),
                {e: r.__dict__ for e, r in record.experts.items()},
                differences(records[i - 1], record) if i else [],
            )
        )
    return rows


def differences(before: RunRecord, after: RunRecord) -> list[str]:
    old, new = before.snapshot, after.snapshot
    if old is None or new is None:
        return ["not known (an earlier run predates run records)"]
    found = [c.text for c in changes_since(old, new)]
    carried = [e for e, r in after.experts.items() if r.from_run is not None]
    if carried:
        found.append(f"{', '.join(carried)} carried over unchanged")
    return found or ["no differences (a new run was asked for)"]


def run_lines(rows: list[RunRow]) -> list[str]:
    """The table `wanlora runs` prints: one block per run."""
    if not rows:
        return ["no runs yet"]
    lines = []
    for row in rows:
        lines.append(f"run {row.number}  {row.started}  {row.status}  {row.folder}")
        for expert, r in row.experts.items():
            loss = f"{r['final_loss']:.4f}" if r.get("final_loss") is not None else "-"
            carried = f", carried from run {r['from_run']}" if r.get("from_run") else ""
            lines.append(f"  {expert}: {r['status']}, {r['steps'] or 0} steps, final loss {loss}{carried}")
        if row.number > rows[0].number:
            lines.append("  changes from the run before:")
            lines += [f"    {d}" for d in row.differences]
    return lines
