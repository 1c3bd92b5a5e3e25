"""`wanlora doctor`: can a training run start on this machine (for this project)?

Each check is one line with a verdict: ok, warn (a run can start but something is off) or
FAIL (a run cannot start; the line says what to do). `DoctorReport.ok` is True only when no
line is FAIL.

Rules, stated once here:
- Model files: a registry file must exist and be at least TRUNCATED_RATIO of the registry's
  approximate size (smaller means an interrupted or damaged download); a tokenizer folder
  must hold each of its files; a path that is not a registry id only has to exist.
- GPU memory: `estimate_vram_bytes` (the smallest speed plan's predicted peak plus the
  planner's margin; the memory model is wanlora.train.speed.memory_plan's, the one training uses)
  against the GPU's free memory: below it FAIL, below ESTIMATE_HEADROOM x it warn. Both this
  and the speed plan are for the longest clip the dataset settings cut (`planned_frames`;
  TI2V-5B clips with per-token timesteps), at the dataset resolution and batch size.
- Speed plan: the plan `wanlora train` will make (`plan_speed`: storage, recomputed blocks,
  compile, predicted peak; CUDA-graphed steps or why not, for one process) for
  training.max_vram_gb, else the GPU's free memory; FAIL when even the smallest plan does
  not fit that budget.
- Cache: where `wanlora cache` will run the VAE and the text encoder (caching.py): on the GPU
  when each fits its free memory (or training.max_vram_gb) with a margin, else on the CPU
  (slower); always "ok", it states the caching phase's need.
- No GPU: a run can start on CPU only when every DiT file is under CPU_MAX_DIT_BYTES (the
  tiny demo models); it is slow but works. Real 14B experts on CPU: FAIL "no GPU".
  Without a project the run judged is the recipe's (14B experts), so no GPU is a FAIL too;
  `wanlora doctor DIR` on a project of small models says whether that one runs on CPU.
- Without a project, the checks that need one (model files, GPU memory need, speed plan,
  disk) are not made: one "project" row names them, and the verdict says so.
- Disk: the models folder's disk must hold what is still to download; the project's disk
  must hold PROJECT_DISK_PER_EXPERT per expert (caches, LoRAs, resume states).
"""

from __future__ import annotations

from ..dataset.sources import longest_clip_frames
from ..errors import WanloraError
from ..recipes.project import Project
from .caching import check_cache
from .machine import (
    check_attention,
    check_devices,
    check_disk,
    check_libraries,
    check_python,
    devices_text,
)
from .memory import check_gpu, check_plan, dit_params, dit_shape, estimate_vram_bytes, smallest_need
from .models import check_models, dit_sizes
from .report import (
    CPU_MAX_DIT_BYTES,
    NOT_CHECKED,
    TRUNCATED_RATIO,
    Check,
    DoctorReport,
)

__all__ = [
    "CPU_MAX_DIT_BYTES",
    "NOT_CHECKED",
    "TRUNCATED_RATIO",
    "Check",
    "DoctorReport",
    "devices_text",
    "dit_params",
    "estimate_vram_bytes",
    "run_doctor",
]


def run_doctor(project: Project | None) -> DoctorReport:
    """Run every check for this machine, and for `project` when one is given."""
    report = DoctorReport(project=str(project.root) if project else None)
    check_python(report)
    check_libraries(report)
    check_attention(report, project.config if project else None)
    if project is None:
        check_gpu(report, need=None, dit_bytes=[])
        report.add(
            "project",
            "warn",
            f"none given: not checked: {NOT_CHECKED}",
            "wanlora doctor DIR (your project folder, made by `wanlora init`)",
        )
        return report
    check_models(report, project)
    dits = dit_sizes(project)
    biggest = max(dits, key=lambda d: d[1], default=None)
    shape = dit_shape(*biggest) if biggest else None
    frames = planned_frames(project)
    need = smallest_need(project.config, shape, frames) if shape else None
    check_gpu(report, need, [size for _, size in dits])
    check_devices(report, project)
    check_cache(report, project)
    if shape is not None:
        check_plan(report, project.config, shape, max(size for _, size in dits), frames)
    check_disk(report, project)
    return report


def planned_frames(project: Project) -> int:
    """The longest clip training plans memory for (1 when the dataset.toml is bad: `wanlora
    check` reports that)."""
    try:
        return longest_clip_frames(project)
    except WanloraError:
        return 1
