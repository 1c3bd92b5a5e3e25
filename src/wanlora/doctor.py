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
  against the GPU's free memory: below it FAIL, below ESTIMATE_HEADROOM x it warn.
- Speed plan: the plan `wanlora train` will make (`plan_speed`: storage, recomputed blocks,
  compile, predicted peak; CUDA-graphed steps or why not, for one process) for
  training.max_vram_gb, else the GPU's free memory; FAIL when even the smallest plan does
  not fit that budget.
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

import importlib.metadata
import importlib.util
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from packaging.requirements import Requirement
from packaging.version import Version

from .models.download import ModelRef, free_disk_bytes, human_bytes, referenced_models
from .models.registry import MODEL_FILES, resolve_model_path
from .recipes.project import PROJECT_FILE, Project
from .recipes.schema import RecipeConfig

GB = 1000**3
TRUNCATED_RATIO = 0.9
CPU_MAX_DIT_BYTES = 1 * GB
ESTIMATE_HEADROOM = 1.15
PROJECT_DISK_PER_EXPERT = 3 * GB  # text/latent caches + LoRA (~150 MB) + resume state (~1 GB)
LIBRARIES = ("torch", "diffusers", "transformers", "peft", "accelerate", "huggingface-hub")
DIST_NAME = "wan22-loratrain"

Status = Literal["ok", "warn", "FAIL"]
# what `run_doctor(None)` cannot judge: everything that depends on a project's config
NOT_CHECKED = "model files, the GPU memory the run needs, the speed plan, disk space"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    project: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)

    @property
    def verdict(self) -> str:
        """The one sentence under the table: can a run start, and what was not checked."""
        if not self.ok:
            verdict = "A training run cannot start yet: fix the FAIL lines above."
        elif self.project is None:
            verdict = "This machine can train."
        else:
            return "A training run can start."
        if self.project is None:
            verdict += (
                f" Not checked without a project: {NOT_CHECKED} "
                "(run `wanlora doctor DIR` with your project folder)."
            )
        return verdict

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))

    def to_dict(self) -> dict:
        return {
            "project": self.project,
            "ok": self.ok,
            "verdict": self.verdict,
            "checks": [asdict(c) for c in self.checks],
        }


def run_doctor(project: Project | None) -> DoctorReport:
    """Run every check for this machine, and for `project` when one is given."""
    report = DoctorReport(project=str(project.root) if project else None)
    _check_python(report)
    _check_libraries(report)
    _check_attention(report, project.config if project else None)
    if project is None:
        _check_gpu(report, need=None, dit_bytes=[])
        report.add(
            "project",
            "warn",
            f"none given: not checked: {NOT_CHECKED}",
            "wanlora doctor DIR (your project folder, made by `wanlora init`)",
        )
        return report
    _check_models(report, project)
    dits = _dit_sizes(project)
    biggest = max(dits, key=lambda d: d[1], default=None)
    shape = dit_shape(*biggest) if biggest else None
    need = _smallest_need(project.config, shape) if shape else None
    _check_gpu(report, need, [size for _, size in dits])
    _check_devices(report, project)
    if shape is not None:
        _check_plan(report, project.config, shape, max(size for _, size in dits))
    _check_disk(report, project)
    return report


def dit_params(path: Path, size: int) -> float:
    """Parameter count of a DiT file from its size: 1 byte each if the name says fp8, else 2."""
    name = path.name.lower()
    return size if any(t in name for t in ("fp8", "e4m3", "e5m2")) else size / 2


def dit_shape(path: Path, size: int):
    """The DiT's shape for the memory model: from the file's header, else (not downloaded,
    or not readable) the 14B shape scaled to the parameter count `dit_params` gives."""
    from .train.speed.memory_plan import WAN_14B, DitShape

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
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        config.training.mixed_precision, torch.float32
    )


def plan_for(config: RecipeConfig, shape, *, free_bytes: int | None, device: str = "cuda"):
    """The SpeedPlan `wanlora train` makes for this config (speed.memory_plan.plan_speed)."""
    import torch

    from .train.speed.memory_plan import plan_speed, tokens_for_resolution

    tokens = tokens_for_resolution(config.dataset.resolution) * config.dataset.batch_size
    return plan_speed(
        config.training,
        torch.device(device),
        _dtype(config),
        weight_count=shape.weight_count,
        tokens=tokens,
        shape=shape,
        free_bytes=free_bytes,
        rank=config.lora.network_dim,
    )


def graph_text(config: RecipeConfig, plan) -> str:
    """Whether training steps will replay as CUDA graphs (train/speed/cuda_graph.py), one process."""
    import torch

    from .train.speed.cuda_graph import why_not_graphed

    reason = why_not_graphed(
        config.training,
        config.optimizer.max_grad_norm,
        torch.device("cuda"),
        plan.recompute or 0,
        ranks=1,
    )
    return "CUDA-graphed steps" if reason is None else f"no CUDA graph ({reason})"


def _smallest_need(config: RecipeConfig, shape) -> int:
    """GPU memory the smallest allowed plan needs: its predicted peak plus the margin."""
    from .train.speed.memory_plan import min_budget_bytes

    unbudgeted = config.model_copy(deep=True)
    unbudgeted.training.max_vram_gb = None
    plan = plan_for(unbudgeted, shape, free_bytes=1)  # nothing fits 1 byte: the smallest plan
    return min_budget_bytes(plan.predicted_peak)


def estimate_vram_bytes(config: RecipeConfig, params: float) -> int:
    """GPU memory (bytes) one expert's training needs at least, from the planner's memory model.

    The smallest speed plan the settings allow (fp8 storage with fp8_base, every block
    recomputed with gradient checkpointing) for a DiT of `params` parameters (the 14B shape,
    scaled), at the dataset's resolution and batch size, plus the planner's margin.
    Example: Wan 2.2 recipe (14B, fp8 base, rank 16, 960x960) -> 17.7 GiB + margin = 19.2 GiB.
    The caching phase (umT5 encoder, ~11 GB in bf16) happens before and peaks lower.
    """
    return _smallest_need(config, dit_shape(Path("unknown.safetensors"), int(params * 2)))


def _check_plan(report: DoctorReport, config: RecipeConfig, shape, dit_bytes: int) -> None:
    """One row: the speed plan training will use, and whether it fits its memory budget."""
    import torch

    from .train.speed.memory_plan import GiB, min_budget_bytes

    budget = config.training.max_vram_gb
    cuda = torch.cuda.is_available()
    if not cuda and budget is None:
        if dit_bytes < CPU_MAX_DIT_BYTES:
            plan = plan_for(config, shape, free_bytes=None, device="cpu")
            report.add("speed plan", "ok", f"CPU: {plan.describe()}")
            return
        plan = plan_for(config, shape, free_bytes=1)
        report.add(
            "speed plan",
            "warn",
            f"no GPU to plan for; the smallest plan ({plan.describe().split(';')[0]}) needs "
            f"~{min_budget_bytes(plan.predicted_peak) / GiB:.1f} GiB",
            "set training.max_vram_gb (or pass --max-vram to train) to see the plan for a card",
        )
        return
    free = torch.cuda.mem_get_info()[0] if cuda else None
    plan = plan_for(config, shape, free_bytes=free)
    source = "training.max_vram_gb" if budget is not None else "free GPU memory"
    detail = f"{plan.describe()}, {graph_text(config, plan)} ({source})"
    if not plan.fits:
        need = min_budget_bytes(plan.predicted_peak) / GiB
        report.add(
            "speed plan",
            "FAIL",
            f"{detail}: does not fit; the smallest plan needs ~{need:.1f} GiB",
            "use a card with more memory, lower dataset.resolution or batch_size "
            "(block swapping to host memory is not implemented)",
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


# --- the checks -------------------------------------------------------------------------


def _check_python(report: DoctorReport) -> None:
    # the package itself requires 3.10+, so reaching this line means the version is fine
    report.add("python", "ok", f"{platform.python_version()} ({sys.executable})")


def _check_libraries(report: DoctorReport) -> None:
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
    import torch

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


def _check_attention(report: DoctorReport, config: RecipeConfig | None) -> None:
    import torch.nn.functional as F

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


def _dit_sizes(project: Project) -> list[tuple[Path, int]]:
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


def _check_models(report: DoctorReport, project: Project) -> None:
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


def _check_gpu(report: DoctorReport, need: int | None, dit_bytes: list[int]) -> None:
    import torch

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


def _check_devices(report: DoctorReport, project: Project) -> None:
    """With several GPUs: how `wanlora train` will spread the experts over them."""
    import torch

    if torch.cuda.device_count() > 1:
        from .run.jobs import visible_devices

        experts = list(project.config.experts)
        report.add("Devices", "ok", devices_text(experts, visible_devices()))


def devices_text(experts: list[str], devices: list[str]) -> str:
    """What `wanlora train` does with these devices by default (docs/multi_gpu.md)."""
    from .run.jobs import plan_jobs

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


def _check_disk(report: DoctorReport, project: Project) -> None:
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


def _size_text(path: Path) -> str:
    return human_bytes(path.stat().st_size) if path.is_file() else "folder"
