"""Recipes: presets as plain data, the typed config they fill, and a project's overrides."""

from .config_toml import config_to_toml
from .presets import load_recipe, recipe_data, recipe_names
from .project import (
    PROJECT_FILE,
    NotAProjectFolder,
    Project,
    default_models_dir,
    enclosing_project,
    load_project,
    merge_config,
    project_toml,
    refuse_dataset_folder,
)
from .schema import RecipeConfig

__all__ = [
    "PROJECT_FILE",
    "NotAProjectFolder",
    "Project",
    "RecipeConfig",
    "config_to_toml",
    "default_models_dir",
    "enclosing_project",
    "load_project",
    "load_recipe",
    "merge_config",
    "project_toml",
    "refuse_dataset_folder",
    "recipe_data",
    "recipe_names",
]
