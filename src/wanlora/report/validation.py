"""The validation log and the LoRA-effect verdict, as training's validation writes them.

    output/logs/<expert>/validation.jsonl   one JSON object per line: {"expert", "step",
                                            "epoch", "loss", "effect", "timesteps", "items",
                                            "seconds"}; step 0 is the base model (effect 0)
    output/verdict.json                     {"experts": {"<expert>": {"effect", "level":
                                            "none" | "weak" | "clear", "text", "summary",
                                            "causes"}}}: `summary` is `text` without
                                            its causes (older verdicts lack it)

Both are optional: without them the report leaves their parts out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ValidationPoint:
    expert: str
    step: int  # 0: the base model (LoRA at zero)
    epoch: int
    loss: float
    effect: float  # ||f_lora - f_base|| / ||f_base||
    seconds: float


@dataclass
class ExpertVerdict:
    expert: str
    effect: float
    level: str  # "none" | "weak" | "clear"
    text: str
    causes: list[str]
    summary: str  # the text without the causes (the text itself when the file lacks it)


def read_validation(path: Path) -> list[ValidationPoint]:
    """The points of a validation.jsonl, by step; a line that does not parse is skipped (a
    run killed mid-write leaves half a line) and the last point of a step wins."""
    if not path.is_file():
        return []
    by_step: dict[int, ValidationPoint] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            point = ValidationPoint(
                expert=str(row["expert"]),
                step=int(row["step"]),
                epoch=int(row.get("epoch", 0)),
                loss=float(row["loss"]),
                effect=float(row.get("effect", 0.0)),
                seconds=float(row.get("seconds", 0.0)),
            )
        except (ValueError, KeyError, TypeError):
            continue
        by_step[point.step] = point
    return [by_step[step] for step in sorted(by_step)]


def read_verdict(path: Path) -> list[ExpertVerdict]:
    """verdict.json's experts ([] when there is none or it does not parse)."""
    try:
        experts = json.loads(path.read_text(encoding="utf-8"))["experts"]
        return [
            ExpertVerdict(
                expert=str(name),
                effect=float(v.get("effect", 0.0)),
                level=str(v.get("level", "")),
                text=str(v.get("text", "")),
                causes=[str(c) for c in v.get("causes", [])],
                summary=str(v.get("summary") or v.get("text", "")),
            )
            for name, v in experts.items()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
