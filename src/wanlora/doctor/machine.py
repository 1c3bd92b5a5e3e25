"""This machine: Python, libraries, attention kernels, devices and disk."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from packaging.requirements import Requirement
from packaging.version import Version

from ..models.download import free_disk_bytes, human_bytes, referenced_models
from ..models.registry import MODEL_FILES
from ..recipes.project import PROJECT_FILE, Project
from ..recipes.schema import RecipeConfig
from ..run.jobs import plan_jobs, visible_devices
from .report import DIST_NAME, LIBRARIES, PROJECT_DISK_PER_EXPERT, DoctorReport


def check_python(report: DoctorReport) -> None:
    # the package itself requires 3.10+, so reaching this line means the version is fine
    report.add("python", "ok", f"{platform.python_version()} ({sys.executable})")


def check_libraries(report: DoctorReport) -> None:
    wanted = _declared_requirements()
    for name in LIBRARIES:
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            report.add(name, "FAIL", "not installed", f"pip install '{wanted.get(name, name)}'")
            continue
        req = wanted.get(name)
        if req is not None and not req.specifier.contains(Version(have), prereleases=True):
            report.add(name, "FAIL", f"{have} (need {req.specifier})", f"pip install '{req}'")
        else:
            report.add(name, "ok", have)
    cuda = torch.version.cuda
    if cuda:
        report.add("torch CUDA build", "ok", f"CUDA {cuda}")
    elif shutil.which("nvidia-smi"):
        report.add(
            "torch CUDA build",
            "FAIL",
            "torch is a CPU-only build but this machine has an NVIDIA GPU",
            "install a CUDA build: pip install torch --index-url https://download.pytorch.org/whl/cu128",
        )
    else:
        report.add("torch CUDA build", "warn", "CPU-only torch build")


def _declared_requirements() -> dict[str, Requirement]:
    """Our own pyproject's version ranges, from the installed package's metadata."""
    try:
        lines = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    reqs = [Requirement(line) for line in lines]
    return {r.name.lower(): r for r in reqs if r.marker is None}


def check_attention(report: DoctorReport, config: RecipeConfig | None) -> None:
    found = ["sdpa"] if hasattr(F, "scaled_dot_product_attention") else []
    found += [name for name in ("flash_attn", "xformers") if importlib.util.find_spec(name)]
    wanted = config.training.attention if config else "sdpa"
    if wanted in found:
        report.add("attention", "ok", f"available: {', '.join(found)}; recipe uses {wanted}")
    else:
        report.add(
            "attention",
            "FAIL",
            f"the config asks for {wanted}, which is not installed (available: {', '.join(found)})",
            f'pip install {wanted}, or set training.attention = "sdpa" in {PROJECT_FILE}',
        )


def check_devices(report: DoctorReport, project: Project) -> None:
    """With several GPUs: how `wanlora train` will spread the experts over them."""
    if torch.cuda.device_count() > 1:

        experts = list(project.config.experts)
        report.add("Devices", "ok", devices_text(experts, visible_devices()))


def devices_text(experts: list[str], devices: list[str]) -> str:
    """What `wanlora train` does with these devices by default (docs/multi_gpu.md)."""
    waves = plan_jobs(experts, devices)
    if waves is None:  # one process on the first device
        text = f"{' then '.join(experts)} on {devices[0]}"
        if len(devices) > 1 and len(experts) == 1:
            text += f" (--data-parallel {len(devices)}: over all of them)"
        used = devices[:1]
    else:
        jobs = [" and ".join(f"{j.expert} on {', '.join(j.devices)}" for j in w) for w in waves]
        text = "; then ".join(jobs)
        if len(waves) == 1 and len(waves[0]) > 1:
            text += ", at the same time (--sequential: one after the other)"
        used = sorted({d for w in waves for j in w for d in j.devices})
    unused = [d for d in devices if d not in used]
    if unused:
        text += f"; {', '.join(unused)} unused"
        per_expert = len(devices) // len(experts)
        if waves is not None and per_expert >= 2:
            text += f" (--data-parallel {per_expert}: each expert over {per_expert} GPUs)"
    return f"{len(devices)} GPU{'s' if len(devices) > 1 else ''}: {text}; see docs/multi_gpu.md"


def check_disk(report: DoctorReport, project: Project) -> None:
    models_dir = project.models_dir
    to_download = 0
    for ref in referenced_models(project.config):
        model = MODEL_FILES.get(ref.value)
        if model is not None and not model.local_path(models_dir).exists():
            to_download += model.approx_bytes
    free = free_disk_bytes(models_dir)
    detail = f"{models_dir}: {human_bytes(free)} free, {human_bytes(to_download)} still to download"
    if free < to_download:
        report.add(
            "disk (models)",
            "FAIL",
            detail,
            f"free space, or set models.dir in {PROJECT_FILE} (or WANLORA_MODELS_DIR) to a bigger disk",
        )
    else:
        report.add("disk (models)", "ok", detail)
    need = PROJECT_DISK_PER_EXPERT * len(project.config.experts)
    what = "caches and outputs"
    if to_download and _device(models_dir) == _device(project.root):  # one disk for both
        need += to_download
        what += " plus the downloads"
    free = free_disk_bytes(project.root)
    detail = f"{project.root}: {human_bytes(free)} free, ~{human_bytes(need)} needed for {what}"
    if free < need:
        report.add(
            "disk (project)", "FAIL", detail, "free space or move the project to a bigger disk"
        )
    else:
        report.add("disk (project)", "ok", detail)


def _device(path: Path) -> int:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.stat().st_dev
