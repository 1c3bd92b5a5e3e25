"""A config as TOML showing every setting: `wanlora inspect recipe|config` and the report.

A setting that is unset (None) has no TOML value, so it is printed as a comment saying what
unset means (the schema's `unset(...)`), e.g. `# max_vram_gb = (unset: the card's free
memory)`. Comments load as nothing, so the text loads back to the same config.
"""

from __future__ import annotations

from typing import Any

import tomli_w
from pydantic import BaseModel

from .schema import RecipeConfig


def config_to_toml(config: RecipeConfig) -> str:
    """The full effective config as TOML (loads back to the same config)."""
    head, tables = _split(config)
    parts = ["".join(head)]
    for name, model in tables:
        parts.append(f"[{name}]\n" + "".join(_table_lines(model)))
    return "\n".join(part for part in parts if part)


def _split(config: RecipeConfig) -> tuple[list[str], list[tuple[str, BaseModel]]]:
    """Top-level key lines, and the tables ([experts.NAME] one per expert) in field order."""
    head: list[str] = []
    tables: list[tuple[str, BaseModel]] = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            tables.append((name, value))
        elif isinstance(value, dict):  # experts: a table of tables
            tables.extend((f"{name}.{key}", model) for key, model in value.items())
        else:
            head.extend(_key_lines(config, name))
    return head, tables


def _table_lines(model: BaseModel) -> list[str]:
    return [line for name in type(model).model_fields for line in _key_lines(model, name)]


def _key_lines(model: BaseModel, name: str) -> list[str]:
    value = getattr(model, name)
    if value is None:
        extra = type(model).model_fields[name].json_schema_extra
        meaning = extra.get("unset") if isinstance(extra, dict) else None
        return [f"# {name} = (unset{': ' + meaning if meaning else ''})\n"]
    dumped: Any = model.model_dump(mode="json", include={name})[name]
    if isinstance(dumped, list) and not any(isinstance(v, (list, dict)) for v in dumped):
        # `resolution = [960, 960]` on one line (tomli_w puts each item on its own)
        items = ", ".join(_value(item) for item in dumped)
        return [f"{name} = [{items}]\n"]
    return [tomli_w.dumps({name: dumped})]


def _value(item: Any) -> str:
    """One scalar as a TOML value."""
    return tomli_w.dumps({"v": item})[len("v = ") :].rstrip("\n")
