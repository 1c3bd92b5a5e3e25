"""The samples during training as one grid per prompt: does the LoRA change the picture?

    prompt 0        strength 0.5   strength 1
    base            [base models, no LoRA]
    high epoch 1    [ ]            [ ]
    high epoch 2    [ ]            [ ]
    low epoch 1     [ ]            [ ]

Rows: the base models on top (TrainingMonitor renders them once), then each expert's epochs
in training order (at most MAX_GRID_EPOCHS per expert: the first, the last and evenly
between). Columns: the LoRA strengths of `[sample] strengths`. Every cell has the same seed
and noise, so what changes down a column is the LoRA alone. The newest file wins where an
(expert, epoch, prompt, strength) was rendered twice (a resumed run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAX_GRID_EPOCHS = 8


@dataclass
class SampleFile:
    path: Path
    info: dict


@dataclass
class GridRow:
    label: str  # "base" or "<expert> epoch <n>"
    expert: str | None  # None: the base models
    epoch: int | None
    cells: list[SampleFile | None]  # one per strength (the base row: its first cell only)


@dataclass
class SampleGrid:
    prompt_index: int
    prompt: str
    strengths: list[float]
    rows: list[GridRow] = field(default_factory=list)
    epochs_left_out: int = 0  # by the MAX_GRID_EPOCHS cap


def _strength(info: dict) -> float:
    if "strength" in info:
        return float(info["strength"])
    return float((info.get("strengths") or {}).get(info.get("expert"), 1.0))


def spread(values: list[int], most: int) -> list[int]:
    """At most `most` of the sorted `values`: the first, the last and evenly between."""
    if len(values) <= most:
        return values
    step = (len(values) - 1) / (most - 1)
    return sorted({values[round(i * step)] for i in range(most)})


def sample_grids(samples: list[SampleFile]) -> list[SampleGrid]:
    """One grid per prompt from the samples during training (`samples` newest first)."""
    training = [s for s in samples if s.info.get("kind") == "training"]
    bases = [s for s in samples if s.info.get("kind") == "training_base"]
    cells: dict[tuple[int, str, int, float], SampleFile] = {}
    for s in reversed(training):  # oldest first: the newest file of a cell wins
        key = (
            int(s.info.get("prompt_index", 0)),
            str(s.info.get("expert")),
            int(s.info.get("epoch", 0)),
            _strength(s.info),
        )
        cells[key] = s
    base = {}
    for s in reversed(bases):
        base[int(s.info.get("prompt_index", 0))] = s
    prompts = sorted({k[0] for k in cells} | set(base))
    experts = list(dict.fromkeys(str(s.info.get("expert")) for s in reversed(training)))
    grids = []
    for p in prompts:
        mine = {k: v for k, v in cells.items() if k[0] == p}
        strengths = sorted({k[3] for k in mine}) or [1.0]
        newest = next((s for s in samples if s in mine.values() or s is base.get(p)), None)
        grid = SampleGrid(p, str(newest.info.get("prompt", "")) if newest else "", strengths)
        if p in base:
            grid.rows.append(GridRow("base", None, None, [base[p]] + [None] * (len(strengths) - 1)))
        for expert in experts:
            epochs = sorted({k[2] for k in mine if k[1] == expert})
            shown = spread(epochs, MAX_GRID_EPOCHS)
            grid.epochs_left_out += len(epochs) - len(shown)
            for epoch in shown:
                row = [mine.get((p, expert, epoch, st)) for st in strengths]
                grid.rows.append(GridRow(f"{expert} epoch {epoch}", expert, epoch, row))
        grids.append(grid)
    return grids
