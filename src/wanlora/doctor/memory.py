"""GPU memory: the speed plan `wanlora train` will make, and whether the GPU holds it."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.download import human_bytes
from ..recipes.schema import RecipeConfig
from ..train.setup import plan_tokens
from ..train.speed.cuda_graph import why_not_graphed
from ..train.speed.memory_plan import WAN_14B, DitShape, GiB, min_budget_bytes
from ..train.speed.swap_plan import plan_with_swap
from .report import CPU_MAX_DIT_BYTES, ESTIMATE_HEADROOM, DoctorReport


def dit_params(path: Path, size: int) -> float:
    """Parameter count of a DiT file from its size: 1 byte each if the name says fp8, else 2."""
    name = path.name.lower()
    return size if any(t in name for t in ("fp8", "e4m3", "e5m2")) else size / 2


def dit_shape(path: Path, size: int):
    """The DiT's shape for the memory model: from the file's header, else (not downloaded,
    or not readable) the 14B shape scaled to the parameter count `dit_params` gives."""
    if path.is_file():
        try:
            return DitShape.from_header(path)
        except Exception:  # noqa: BLE001 - a damaged file is reported by the models check
            pass
    scale = dit_params(path, size) / WAN_14B.weight_count
    if 0.9 < scale < 1.1:
        return WAN_14B
    return DitShape(
        max(1, round(WAN_14B.dim * scale)),
        max(1, round(WAN_14B.ffn_dim * scale)),
        WAN_14B.num_layers,
        round(WAN_14B.linear_weights * scale),
        round(WAN_14B.other16_weights * scale),
        round(WAN_14B.float32_weights * scale),
    )


def _dtype(config: RecipeConfig):
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        config.training.mixed_precision, torch.float32
    )


def plan_for(
    config: RecipeConfig, shape, *, free_bytes: int | None, device: str = "cuda", frames: int = 1
):
    """The plan `wanlora train` makes for this config and its longest clip of `frames`
    (train/setup.speed_plan: storage, recompute, compile, blocks streamed from host memory)."""
    tokens, per_token = plan_tokens(config, frames)
    return plan_with_swap(
        config.training,
        torch.device(device),
        _dtype(config),
        tokens=tokens,
        shape=shape,
        free_bytes=free_bytes,
        rank=config.lora.network_dim,
        per_token=per_token,
    )


def graph_text(config: RecipeConfig, plan) -> str:
    """Whether training steps will replay as CUDA graphs (train/speed/cuda_graph.py), one process."""

    reason = why_not_graphed(
        config.training,
        config.optimizer.max_grad_norm,
        torch.device("cuda"),
        plan.recompute or 0,
        ranks=1,
    )
    return "CUDA-graphed steps" if reason is None else f"no CUDA graph ({reason})"


def smallest_need(config: RecipeConfig, shape, frames: int = 1) -> int:
    """GPU memory the smallest allowed plan needs: its predicted peak plus the margin."""
    unbudgeted = config.model_copy(deep=True)
    unbudgeted.training.max_vram_gb = None
    plan = plan_for(unbudgeted, shape, free_bytes=1, frames=frames)  # nothing fits 1 byte: the smallest plan
    return min_budget_bytes(plan.predicted_peak)


def estimate_vram_bytes(config: RecipeConfig, params: float) -> int:
    """GPU memory (bytes) one expert's training needs at least, from the planner's memory model.

    The smallest plan the settings allow (fp8 storage with fp8_base, every block recomputed
    with gradient checkpointing, every block streamed from host memory) for a DiT of `params`
    parameters (the 14B shape, scaled), at the dataset's resolution and batch size, plus the
    planner's margin. Example: Wan 2.2 recipe (14B, fp8 base, rank 16, 960x960) -> ~7.2 GB.
    The caching phase (umT5 encoder, 11.4 GB in bf16) happens before, on the same device
    when it fits there, else on the CPU (the "cache" row, caching.py).
    """
    return smallest_need(config, dit_shape(Path("unknown.safetensors"), int(params * 2)))


def check_plan(
    report: DoctorReport, config: RecipeConfig, shape, dit_bytes: int, frames: int = 1
) -> None:
    """One row: the speed plan training will use for its longest clip of `frames`, and
    whether it fits its memory budget."""

    budget = config.training.max_vram_gb
    cuda = torch.cuda.is_available()
    if not cuda and budget is None:
        if dit_bytes < CPU_MAX_DIT_BYTES:
            plan = plan_for(config, shape, free_bytes=None, device="cpu", frames=frames)
            report.add("speed plan", "ok", f"CPU: {plan.describe()}")
            return
        plan = plan_for(config, shape, free_bytes=1, frames=frames)
        report.add(
            "speed plan",
            "warn",
            f"no GPU to plan for; the smallest plan ({plan.describe().split(';')[0]}) needs "
            f"~{min_budget_bytes(plan.predicted_peak) / GiB:.1f} GiB",
            "set training.max_vram_gb (or pass --max-vram to train) to see the plan for a card",
        )
        return
    free = torch.cuda.mem_get_info()[0] if cuda else None
    plan = plan_for(config, shape, free_bytes=free, frames=frames)
    source = "training.max_vram_gb" if budget is not None else "free GPU memory"
    detail = f"{plan.describe()}, {graph_text(config, plan)} ({source})"
    if not plan.fits:
        need = min_budget_bytes(plan.predicted_peak) / GiB
        report.add(
            "speed plan",
            "FAIL",
            f"{detail}: does not fit; the smallest plan needs ~{need:.1f} GiB",
            "use a card with more memory, or lower dataset.resolution or batch_size",
        )
    elif budget is not None and free is not None and budget * GiB > free:
        report.add(
            "speed plan",
            "warn",
            f"{detail}; but only {free / GiB:.1f} GiB of the GPU is free",
            "lower training.max_vram_gb or free GPU memory",
        )
    else:
        report.add("speed plan", "ok", detail)


def check_gpu(report: DoctorReport, need: int | None, dit_bytes: list[int]) -> None:
    need_text = f"~{human_bytes(need)} estimated" if need else "unknown need"
    if not torch.cuda.is_available():
        if need is None:  # no project: judged against the recipe's 14B experts
            report.add(
                "GPU",
                "FAIL",
                "no GPU: training the recipe's 14B experts needs a CUDA GPU; only small "
                "models (`wanlora demo`) train on CPU",
                "run on a machine with an NVIDIA GPU (the recipe uses an 80 GB H100)",
            )
        elif max(dit_bytes) < CPU_MAX_DIT_BYTES:
            report.add("GPU", "warn", "no GPU: these small models train on CPU (slowly)")
        else:
            report.add(
                "GPU",
                "FAIL",
                f"no GPU; these DiT files need a CUDA GPU ({need_text} memory)",
                "run on a machine with an NVIDIA GPU (the recipe uses an 80 GB H100)",
            )
        return
    free, total = torch.cuda.mem_get_info()
    gpu = f"{torch.cuda.get_device_name(0)}: {human_bytes(free)} free of {human_bytes(total)}"
    count = torch.cuda.device_count()
    if count > 1:
        gpu += f" (GPU 0 of {count})"
    if need is None:
        report.add("GPU", "ok", gpu)
    elif free < need:
        report.add(
            "GPU",
            "FAIL",
            f"{gpu}; a run needs {need_text}",
            "use a bigger GPU, free GPU memory (other processes?), or keep fp8_base = true",
        )
    elif free < ESTIMATE_HEADROOM * need:
        report.add("GPU", "warn", f"{gpu}; {need_text} -- tight, may run out of memory")
    else:
        report.add("GPU", "ok", f"{gpu}; {need_text}")
