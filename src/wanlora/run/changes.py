"""What changed since a run: settings field by field, the dataset item by item, model files.

Each change says which experts it retrains: every one, one (`[experts.low]`), or none (an
edit recipes/effects.py marks NONE: sample prompts, save cadence, memory choices). The
plan (plan.py) turns the list into what `wanlora train` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..recipes.effects import RESULT, effect_of, expert_of, flatten
from .records import Snapshot

ALL = "*"  # a change that retrains every expert


@dataclass(frozen=True)
class Change:
    text: str  # "[optimizer] learning_rate 0.0003 -> 0.001", "1 caption changed (a.txt)"
    retrains: frozenset[str]  # expert names, or {ALL}; empty: retrains nothing

    def touches(self, expert: str) -> bool:
        return ALL in self.retrains or expert in self.retrains


def changes_since(old: Snapshot, new: Snapshot) -> list[Change]:
    return [
        *setting_changes(old.settings, new.settings),
        *dataset_changes(old.dataset, new.dataset),
        *model_changes(old.models, new.models),
    ]


def setting_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    before, after = flatten(old), flatten(new)
    found = []
    for name in sorted(before.keys() | after.keys(), key=_field_order(after, before)):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        expert = expert_of(name)
        if effect_of(name) != RESULT:
            retrains: frozenset[str] = frozenset()
        else:
            retrains = frozenset({expert or ALL})
        found.append(Change(f"{field_label(name)} {_show(a)} -> {_show(b)}", retrains))
    return found


def field_label(name: str) -> str:
    """optimizer.learning_rate -> [optimizer] learning_rate (as wanlora.toml spells it)."""
    table, _, key = name.rpartition(".")
    return f"[{table}] {key}" if table else key


def _field_order(*flats: dict[str, Any]):
    order: dict[str, int] = {}
    for flat in flats:
        for name in flat:
            order.setdefault(name, len(order))
    return lambda name: order[name]


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def dataset_changes(old: dict[str, dict], new: dict[str, dict]) -> list[Change]:
    every = frozenset({ALL})
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    both = [n for n in new if n in old]
    images = [n for n in both if old[n]["file"] != new[n]["file"]]
    captions = [new[n]["caption_file"] for n in both if old[n]["caption"] != new[n]["caption"]]
    placed = [
        n
        for n in both
        if (old[n]["bucket"], old[n]["repeats"]) != (new[n]["bucket"], new[n]["repeats"])
    ]
    found = []
    for names, what in (
        (added, "added"),
        (removed, "removed"),
        (images, "changed"),
    ):
        if names:
            found.append(Change(f"{_count(names, 'image')} {what} ({_names(names)})", every))
    if captions:
        found.append(Change(f"{_count(captions, 'caption')} changed ({_names(captions)})", every))
    if placed:
        found.append(Change(f"{_count(placed, 'item')}: other bucket or repeats", every))
    return found


def model_changes(old: dict[str, dict | None], new: dict[str, dict | None]) -> list[Change]:
    found = []
    for kind in new.keys() | old.keys():
        a, b = old.get(kind), new.get(kind)
        if a is None or b is None or a["fingerprint"] == b["fingerprint"]:
            continue  # a file not there is named by the checks, not as a change
        expert = kind.split(".", 1)[1] if kind.startswith("dit.") else ALL
        found.append(Change(f"model file {kind} changed ({a['name']} -> {b['name']})",
                            frozenset({expert})))  # fmt: skip
    return sorted(found, key=lambda c: c.text)


def _count(names: list[str], noun: str) -> str:
    return f"{len(names)} {noun}{'' if len(names) == 1 else 's'}"


def _names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"
