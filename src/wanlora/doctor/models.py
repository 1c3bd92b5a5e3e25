"""The project's model files: present, complete, the DiT sizes the memory check needs."""

from __future__ import annotations

from pathlib import Path

from ..models.download import ModelRef, human_bytes, referenced_models
from ..models.registry import MODEL_FILES, resolve_model_path
from ..recipes.project import PROJECT_FILE, Project
from .report import TRUNCATED_RATIO, DoctorReport


def dit_sizes(project: Project) -> list[tuple[Path, int]]:
    """(path, bytes) of each expert's DiT: the file's size, or the registry's if not there yet."""
    sizes = []
    for ref in referenced_models(project.config):
        if ref.kind != "dit":
            continue
        path = resolve_model_path(ref.value, project.models_dir, project.root)
        model = MODEL_FILES.get(ref.value)
        if path.is_file():
            sizes.append((path, path.stat().st_size))
        elif model is not None:
            sizes.append((path, model.approx_bytes))
    return sizes


def check_models(report: DoctorReport, project: Project) -> None:
    """One line per referenced model: present, the right size, or what to do."""
    models_dir = project.models_dir
    for ref in referenced_models(project.config):
        path = resolve_model_path(ref.value, models_dir, project.root)
        name = ref.key
        model = MODEL_FILES.get(ref.value)
        if model is None:
            if path.exists():
                report.add(name, "ok", f"{path} ({_size_text(path)})")
            else:
                report.add(
                    name,
                    "FAIL",
                    f"{path} does not exist",
                    f"fix {ref.key} in {project.root / PROJECT_FILE}",
                )
            continue
        download = f"run: wanlora download {project.root} --only {_only_token(ref)}"
        if model.is_folder:
            missing = [f for f in model.files if not (path / f).is_file()]
            if missing:
                report.add(name, "FAIL", f"{path}: missing {', '.join(missing)}", download)
            else:
                report.add(name, "ok", f"{path}")
            continue
        if not path.is_file():
            partial = any(path.parent.glob(f"{path.name}.*.incomplete"))
            what = "partly downloaded" if partial else "not downloaded"
            report.add(name, "FAIL", f"{model.id}: {what} ({path})", download)
            continue
        size = path.stat().st_size
        if size < TRUNCATED_RATIO * model.approx_bytes:
            report.add(
                name,
                "FAIL",
                f"{path} is {human_bytes(size)}, expected about {human_bytes(model.approx_bytes)}"
                " (truncated download?)",
                f"delete it and {download}",
            )
            continue
        report.add(name, "ok", f"{model.id} ({human_bytes(size)})")


def _only_token(ref: ModelRef) -> str:
    return ref.expert if ref.expert else ref.kind


def _size_text(path: Path) -> str:
    return human_bytes(path.stat().st_size) if path.is_file() else "folder"
