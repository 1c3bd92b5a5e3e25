"""Recipe presets: plain TOML files next to this module, validated into RecipeConfig."""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

from ..errors import WanloraError
from .schema import RecipeConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def recipe_names() -> list[str]:
    files = resources.files(__package__)
    return sorted(p.name[: -len(".toml")] for p in files.iterdir() if p.name.endswith(".toml"))


def recipe_data(name: str) -> dict[str, Any]:
    """The preset as plain data (a dict), before any project overrides."""
    if name not in recipe_names():
        raise WanloraError(f"unknown recipe '{name}'", f"use one of: {', '.join(recipe_names())}")
    text = resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_recipe(name: str) -> RecipeConfig:
    return RecipeConfig.model_validate(recipe_data(name))
