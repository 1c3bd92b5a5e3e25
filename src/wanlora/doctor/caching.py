"""The caching phase's memory: where `wanlora cache` will run the VAE and the text encoder.

Caching comes before training, on the same card, with models training never loads: the
umT5-xxl encoder (11.4 GB in bf16) does not fit an 8-12 GB card. The cache then encodes on
the CPU (cache/placement.py: the rule, the same one `wanlora cache` applies); this row says
which, from the models' sizes (read off the files, else the registry's) and the card's free
memory or training.max_vram_gb. Encoding on the CPU is slower but works, so the row is "ok"
either way: it states the need, it does not judge it.
"""

from __future__ import annotations

import torch

from ..cache.build import DTYPES, model_paths
from ..cache.placement import GiB, cap_bytes_of, choose_device
from ..device_memory import available_bytes
from ..errors import WanloraError
from ..models.files import loaded_bytes
from ..models.registry import MODEL_FILES
from ..recipes.project import Project
from .report import DoctorReport

CACHE_MODELS = (("vae", "VAE"), ("text_encoder", "text encoder"))


def model_bytes(project: Project, kind: str, dtype: torch.dtype) -> int | None:
    """A cache model's size loaded in `dtype`: off its file, else the registry's file size."""
    path = model_paths(project)[kind]
    if path.is_file():
        try:
            return loaded_bytes(path, dtype)
        except WanloraError:  # damaged or a placeholder: the models check reports it
            return path.stat().st_size
    registry = MODEL_FILES.get(getattr(project.config.models, kind))
    return registry.approx_bytes if registry is not None else None


def check_cache(report: DoctorReport, project: Project) -> None:
    """One row: the caching phase's need and where each of its models will run."""
    config = project.config
    dtypes = {"vae": DTYPES[config.models.vae_dtype], "text_encoder": torch.bfloat16}
    cap = cap_bytes_of(config.training.max_vram_gb)
    cuda = torch.cuda.is_available()
    if not cuda and cap is None:
        report.add("cache", "ok", "no GPU: the VAE and the text encoder encode on the CPU")
        return
    free = available_bytes(torch.device("cuda")) if cuda else None
    parts, placement = [], None
    for kind, what in CACHE_MODELS:
        need = model_bytes(project, kind, dtypes[kind])
        if need is None:  # a custom path not there: the models check FAILs it
            continue
        placement = choose_device(torch.device("cuda"), need, free_bytes=free, cap_bytes=cap)
        where = "on the CPU (slower)" if placement.fell_back else "on the GPU"
        parts.append(f"{what} {need / 1e9:.1f} GB {where}")
    if placement is None:
        return
    source = "training.max_vram_gb" if placement.capped else "free"
    room = f"{placement.room_bytes / GiB:.1f} GiB {source}"
    report.add("cache", "ok", f"{', '.join(parts)} ({room})")
