"""A user's project: wanlora.toml (recipe name + overrides) merged over the recipe preset.

mylora/
  wanlora.toml   dataset/   cache/   output/

A command pointed at a folder inside a project (`wanlora train mylora/dataset`) fails with
one line naming the project folder (`NotAProjectFolder`), instead of treating the images as
a project of their own or reporting a missing wanlora.toml.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from ..errors import WanloraError
from .presets import recipe_data
from .schema import RecipeConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_FILE = "wanlora.toml"


@dataclass(frozen=True)
class Project:
    """A project folder and its effective config."""

    root: Path
    config: RecipeConfig

    @property
    def config_file(self) -> Path:
        return self.root / PROJECT_FILE

    @property
    def dataset_dir(self) -> Path:
        return (self.root / self.config.dataset.directory).resolve()

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def models_dir(self) -> Path:
        if self.config.models.dir:
            path = Path(os.path.expanduser(self.config.models.dir))
            return path if path.is_absolute() else (self.root / path)
        return default_models_dir()


def default_models_dir() -> Path:
    if os.environ.get("WANLORA_MODELS_DIR"):
        return Path(os.environ["WANLORA_MODELS_DIR"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "wanlora" / "models"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override `base` with `override`, recursing into tables; lists and values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge_config(overrides: dict[str, Any], source: str = PROJECT_FILE) -> RecipeConfig:
    """Merge a project's overrides (the parsed wanlora.toml) over its recipe and validate."""
    name = overrides.get("recipe")
    if not isinstance(name, str):
        raise WanloraError(
            f'{source}: missing `recipe = "..."` at the top',
            'add e.g. recipe = "wan22-t2v" (see `wanlora inspect recipe wan22-t2v`)',
        )
    base = recipe_data(name)
    unknown_experts = set(overrides.get("experts", {}) or {}) - set(base.get("experts", {}))
    if unknown_experts:
        raise WanloraError(
            f"{source}: unknown expert(s) {sorted(unknown_experts)} for recipe '{name}'",
            f"this recipe's experts are: {', '.join(base['experts'])}",
        )
    merged = deep_merge(base, overrides)
    try:
        return RecipeConfig.model_validate(merged)
    except ValidationError as exc:
        raise WanloraError(f"{source}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per problem, naming the key and what is allowed."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1])
            problems.append(f"unknown key '{key}' (allowed here: {', '.join(allowed)})")
        elif err["type"] == "literal_error":
            problems.append(f"key '{key}' = {err['input']!r} is not allowed; {err['msg'].lower()}")
        else:
            problems.append(f"key '{key}' = {err['input']!r}: {err['msg']}")
    return "; ".join(problems)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = RecipeConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:  # a dict key such as experts.<name>: the model stays the same
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif getattr(annotation, "__args__", None):
            model = annotation.__args__[-1]  # dict[str, ExpertSettings]
    return sorted(model.model_fields)


def read_overrides(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WanloraError(
            f"{path}: no project file here",
            "create one with `wanlora init DIR --recipe wan22-t2v --name NAME --author YOU`",
        ) from None
    except UnicodeDecodeError:
        raise WanloraError(f"{path}: not UTF-8 text", "save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WanloraError(f"{path}: invalid TOML ({exc})", "fix the syntax at that line") from None


class NotAProjectFolder(WanloraError):
    """`folder` lies inside the project at `project` (whose dataset folder is `dataset_dir`);
    the CLI turns the fix into the user's own command with the project folder in its place."""

    def __init__(self, folder: Path, project: Path, dataset_dir: Path):
        self.folder, self.project, self.dataset_dir = folder, project, dataset_dir
        if folder == dataset_dir:
            where = "the dataset folder of"
        elif dataset_dir in folder.parents:
            where = "inside the dataset folder of"
        else:
            where = "inside"
        super().__init__(
            f"{folder} is {where} the project {project}, not a project folder",
            f"point the command at the project folder: {project}",
        )

    @property
    def in_dataset(self) -> bool:
        return self.folder == self.dataset_dir or self.dataset_dir in self.folder.parents


def enclosing_project(path: str | os.PathLike) -> NotAProjectFolder | None:
    """The nearest project above `path` (as the error to raise), or None when `path` is a
    project itself, has none above, or that project's wanlora.toml does not load."""
    path = Path(path).expanduser().resolve()
    if (path / PROJECT_FILE).is_file():
        return None
    for parent in path.parents:
        if (parent / PROJECT_FILE).is_file():
            try:
                config = merge_config(read_overrides(parent / PROJECT_FILE))
            except WanloraError:  # a broken wanlora.toml: let the command say what it says
                return None
            return NotAProjectFolder(path, parent, Project(parent, config).dataset_dir)
    return None


def refuse_dataset_folder(path: str | os.PathLike) -> None:
    """For commands that also take a plain folder of images (check, caption): a project's own
    dataset folder is not one; the project's settings (resolution, trigger) would be lost."""
    found = enclosing_project(path)
    if found is not None and found.in_dataset:
        raise found


def load_project(root: str | os.PathLike) -> Project:
    root = Path(root).expanduser().resolve()
    if not (root / PROJECT_FILE).is_file():
        found = enclosing_project(root)
        if found is not None:
            raise found
    if not root.is_dir():
        raise WanloraError(
            f"{root}: not a project folder",
            "create it with `wanlora init DIR --recipe wan22-t2v --name NAME --author YOU`",
        )
    path = root / PROJECT_FILE
    config = merge_config(read_overrides(path), source=str(path))
    return Project(root=root, config=config)


def project_toml(recipe: str, name: str, author: str, trigger: str | None = None) -> str:
    """The wanlora.toml that `wanlora init` writes: the recipe name and the user's fields."""
    trigger_line = (
        f"trigger = {tomli_w.dumps({'t': trigger})[4:].strip()}"
        if trigger
        else '# trigger = "cartoon screencap in rm artstyle"  # phrase every caption starts with'
    )
    return f"""\
# wan22-loratrain project. This is the only file you edit.
# Every setting not written here comes from the recipe below; see them all with
#   wanlora inspect recipe {recipe}
# and this project's merged config with
#   wanlora inspect config .
recipe = "{recipe}"

[project]
name = {tomli_w.dumps({"t": name})[4:].strip()}
author = {tomli_w.dumps({"t": author})[4:].strip()}
{trigger_line}

# Override any recipe setting by repeating its table and key, for example:
# [optimizer]
# learning_rate = 3e-4
#
# [experts.high]
# dit = "/path/to/wan2.2_t2v_high_noise_14B_fp16.safetensors"
"""
