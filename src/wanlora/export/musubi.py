"""A project as the recipe's original musubi-tuner workflow: dataset.toml + run.sh.

`wanlora export musubi DIR` writes DIR/export/musubi/{dataset.toml, run.sh} (and, for video
JSONL lists, a copy of each with absolute paths, videos_N.jsonl): the two caching
commands and one training command per expert, flag for flag as the recipe's author runs
them (RECIPE.md), with the project's paths, names and overrides filled in. A setting that
musubi-tuner's flags cannot express is refused rather than silently dropped.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from ..dataset.musubi_toml import dataset_toml_text
from ..dataset.sources import dataset_sources
from ..dataset.video_sources import read_video_jsonl
from ..errors import WanloraError
from ..fsutil import atomic_write_text
from ..models.registry import resolve_model_path
from ..recipes.project import Project
from ..recipes.schema import RecipeConfig

# musubi-tuner's scripts, relative to a checkout of it (the commands run from its root).
CACHE_LATENTS_SCRIPT = "src/musubi_tuner/wan_cache_latents.py"
CACHE_TEXT_SCRIPT = "src/musubi_tuner/wan_cache_text_encoder_outputs.py"
TRAIN_SCRIPT = "src/musubi_tuner/wan_train_network.py"
REFERENCE = "musubi-tuner, branch feature-wan-2-2, commit d0a19306"

# transformers' default lr_end, which musubi-tuner's polynomial schedule always uses.
MUSUBI_POLYNOMIAL_LR_END = 1e-7
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8
VAE_DTYPE_FLAG = {"fp16": "float16", "fp32": "float32"}  # bf16 is musubi's Wan default


@dataclass(frozen=True)
class MusubiExport:
    """The files and commands of one project's musubi-tuner workflow."""

    dataset_toml: str
    script: str
    commands: list[list[str]]  # cache latents, cache text, then one training run per expert
    video_lists: dict[str, str] = field(default_factory=dict)  # videos_N.jsonl -> its text


def export_dir(project: Project) -> Path:
    return project.root / "export" / "musubi"


def musubi_export(project: Project) -> MusubiExport:
    """The project's dataset.toml, run.sh and commands (raises WanloraError if inexpressible)."""
    config = project.config
    check_expressible(config)
    folder = export_dir(project)
    dataset_config = str(folder / "dataset.toml")

    def model(value: str) -> str:
        return os.path.abspath(resolve_model_path(value, project.models_dir, project.root))

    vae, t5 = model(config.models.vae), model(config.models.text_encoder)
    cache_latents = ["python", CACHE_LATENTS_SCRIPT, "--dataset_config", dataset_config]
    cache_latents += ["--vae", vae]
    if config.models.vae_dtype in VAE_DTYPE_FLAG:
        cache_latents += ["--vae_dtype", VAE_DTYPE_FLAG[config.models.vae_dtype]]
    if config.dit_task == "i2v":
        # the first-frame conditioning (mask + y) is cached with the latents (M docs/wan.md:119)
        cache_latents.append("--i2v")
    cache_text = ["python", CACHE_TEXT_SCRIPT, "--dataset_config", dataset_config]
    cache_text += ["--t5", t5, "--batch_size", "16"]

    commands = [cache_latents, cache_text]
    for expert in config.experts:
        commands.append(
            train_command(config, expert, model(config.experts[expert].dit), vae, t5, folder)
        )
    dataset_toml, video_lists = _dataset_toml(project)
    return MusubiExport(
        dataset_toml=dataset_toml,
        script=_script(project, commands),
        commands=commands,
        video_lists=video_lists,
    )


def check_expressible(config: RecipeConfig) -> None:
    """Refuse settings that musubi-tuner's flags cannot reproduce."""
    if config.task == "ti2v-5B":  # musubi-tuner v0.3.4 trains Wan 2.2 14B only
        raise WanloraError(
            f"recipe {config.recipe} cannot be exported: musubi-tuner has no 5B task (its Wan "
            "2.2 tasks are t2v-A14B and i2v-A14B)",
            "train the TI2V-5B LoRA with `wanlora train`",
        )
    scheduler = config.scheduler
    if scheduler.lr_scheduler == "polynomial" and scheduler.lr_end != MUSUBI_POLYNOMIAL_LR_END:
        raise WanloraError(
            f"[scheduler] lr_end = {scheduler.lr_end:g} cannot be exported: musubi-tuner's "
            f"polynomial schedule always ends at {MUSUBI_POLYNOMIAL_LR_END:g}",
            "remove lr_end from wanlora.toml to export, or train with `wanlora train`",
        )
    if config.sample.every_n_epochs is not None:
        raise WanloraError(
            "[sample] every_n_epochs cannot be exported: musubi-tuner's in-training samples "
            "need a prompt file in its own format, which wanlora does not write",
            "remove sample.every_n_epochs to export, and render samples with `wanlora sample`",
        )
    if config.validation.enabled and config.validation.items:
        raise WanloraError(
            "[validation] items cannot be exported: musubi-tuner trains on every image of the "
            "dataset folder, held-out ones included",
            "remove validation.items to export, or move those images out of the dataset folder",
        )


def train_command(
    config: RecipeConfig, expert: str, dit: str, vae: str, t5: str, folder: Path
) -> list[str]:
    """`accelerate launch ... wan_train_network.py ...` for one expert, in the recipe's order."""
    training, optimizer = config.training, config.optimizer
    lora, timesteps = config.lora, config.timesteps
    settings = config.experts[expert]
    precision = training.mixed_precision

    cmd = ["accelerate", "launch", "--num_cpu_threads_per_process", "1"]
    cmd += ["--mixed_precision", precision, TRAIN_SCRIPT]
    cmd += ["--task", config.task, "--dit", dit]
    # the author's command passes the VAE and T5 too; musubi-tuner loads them only to sample
    cmd += ["--vae", vae, "--t5", t5]
    cmd += ["--dataset_config", str(folder / "dataset.toml")]
    cmd += [_attention_flag(config), "--mixed_precision", precision]
    if training.fp8_base:
        cmd.append("--fp8_base")
    cmd += ["--optimizer_type", optimizer.optimizer_type.lower()]
    cmd += ["--learning_rate", _num(optimizer.learning_rate)]
    cmd += ["--optimizer_args", f"weight_decay={_num(optimizer.weight_decay)}"]
    if tuple(optimizer.betas) != DEFAULT_BETAS:
        cmd.append(f"betas=({_num(optimizer.betas[0])},{_num(optimizer.betas[1])})")
    if optimizer.eps != DEFAULT_EPS:
        cmd.append(f"eps={_num(optimizer.eps)}")
    cmd += ["--max_grad_norm", _num(optimizer.max_grad_norm)]
    if training.gradient_checkpointing:
        cmd.append("--gradient_checkpointing")
    cmd += ["--gradient_accumulation_steps", str(training.gradient_accumulation_steps)]
    cmd += ["--network_module", lora.network_module]
    cmd += ["--network_dim", str(lora.network_dim), "--network_alpha", _num(lora.network_alpha)]
    if lora.network_dropout is not None:
        cmd += ["--network_dropout", _num(lora.network_dropout)]
    cmd += ["--timestep_sampling", timesteps.timestep_sampling]
    cmd += ["--discrete_flow_shift", repr(float(timesteps.discrete_flow_shift))]
    if timesteps.sigmoid_scale != 1.0:
        cmd += ["--sigmoid_scale", _num(timesteps.sigmoid_scale)]
    cmd += ["--max_train_epochs", str(training.max_train_epochs)]
    cmd += ["--save_every_n_epochs", str(training.save_every_n_epochs)]
    cmd += ["--seed", str(training.seed)]
    cmd += _scheduler_flags(config)
    cmd += ["--max_data_loader_n_workers", str(training.max_data_loader_n_workers)]
    if training.max_data_loader_n_workers > 0:  # torch refuses persistent workers without workers
        cmd.append("--persistent_data_loader_workers")
    if timesteps.preserve_distribution_shape:
        cmd.append("--preserve_distribution_shape")
    if (settings.min_timestep, settings.max_timestep) != (0, 1000):
        cmd += ["--min_timestep", str(settings.min_timestep)]
        cmd += ["--max_timestep", str(settings.max_timestep)]
    cmd += ["--output_dir", str(folder / "output"), "--output_name", config.output_name(expert)]
    cmd += ["--metadata_title", config.metadata_title(expert)]
    cmd += ["--metadata_author", config.project.author]
    return cmd


def _attention_flag(config: RecipeConfig) -> str:
    # The recipe trains with xformers. Our own default is SDPA (numerically equivalent), so
    # only a project that chose `attention` explicitly gets something other than --xformers.
    explicit = "attention" in config.training.model_fields_set
    return f"--{config.training.attention}" if explicit else "--xformers"


def _scheduler_flags(config: RecipeConfig) -> list[str]:
    scheduler = config.scheduler
    name = scheduler.lr_scheduler
    if name == "constant" and scheduler.lr_warmup_steps:
        name = "constant_with_warmup"  # musubi's plain "constant" takes no warmup
    flags = ["--lr_scheduler", name]
    if scheduler.lr_warmup_steps:
        flags += ["--lr_warmup_steps", str(scheduler.lr_warmup_steps)]
    if scheduler.lr_scheduler == "polynomial":
        flags += ["--lr_scheduler_power", _num(scheduler.lr_scheduler_power)]
    if scheduler.lr_scheduler_min_lr_ratio is not None:
        # passed like the recipe does, though the schedule does not apply it (TRAINER_SPEC 7)
        flags += ["--lr_scheduler_min_lr_ratio", _num(scheduler.lr_scheduler_min_lr_ratio)]
    return flags


def _num(value: float) -> str:
    """A number as the recipe writes it: 16, 0.1, 3e-4, 5e-5."""
    if float(value).is_integer():
        return str(int(value))
    if abs(value) < 1e-3:
        return format(Decimal(repr(float(value))), "e")  # 3e-4, not 0.0003 or 3e-04
    return repr(float(value))


def _dataset_toml(project: Project) -> tuple[str, dict[str, str]]:
    """The dataset.toml, and the video JSONL lists it names (file name -> text)."""
    sources = dataset_sources(project)
    folder = export_dir(project)
    cache = folder / "cache"
    entries, videos = sources.entries, list(sources.videos)
    if len(entries) + len(videos) == 1:
        entries = [replace(e, cache_directory=cache) for e in entries]
        videos = [replace(v, cache_directory=cache) for v in videos]
    else:  # one cache folder per dataset: cache file names come from image and video names
        entries = [replace(e, cache_directory=cache / str(i)) for i, e in enumerate(entries)]
        videos = [
            replace(v, cache_directory=cache / str(len(entries) + i)) for i, v in enumerate(videos)
        ]
    lists: dict[str, str] = {}
    for index, video in enumerate(videos):
        if video.video_jsonl_file is not None:
            # musubi resolves a JSONL's relative paths against its working directory: write
            # a copy with absolute ones (the same videos and captions, in the same order)
            name = f"videos_{index}.jsonl"
            lists[name] = "".join(
                json.dumps({"video_path": str(v.path), "caption": v.caption}, ensure_ascii=False)
                + "\n"
                for v in read_video_jsonl(video.video_jsonl_file)
            )
            videos[index] = replace(video, video_jsonl_file=folder / name)
    header = (
        f"musubi-tuner dataset config for the wanlora project {project.root}\n"
        "written by `wanlora export musubi`; regenerate it after changing wanlora.toml"
    )
    return dataset_toml_text(entries, header=header, videos=videos), lists


def _script(project: Project, commands: list[list[str]]) -> str:
    config = project.config
    lines = [
        "#!/usr/bin/env bash",
        f"# The wanlora project {project.root} (recipe {config.recipe}) as musubi-tuner commands.",
        "# Written by `wanlora export musubi`; regenerate it after changing wanlora.toml.",
        f"# Run it from the root of a musubi-tuner checkout ({REFERENCE}):",
        f"#   cd musubi-tuner && bash {shlex.quote(str(export_dir(project) / 'run.sh'))}",
        "set -euo pipefail",
        "",
        "# 1. cache latents with the VAE (redo whenever the images change)",
        _render(commands[0]),
        "",
        "# 2. cache the text encoder's outputs (redo whenever the captions change)",
        _render(commands[1]),
    ]
    for number, (expert, command) in enumerate(zip(config.experts, commands[2:], strict=True), 3):
        lines += ["", f"# {number}. train the {expert} expert -> {config.output_name(expert)}"]
        lines.append(_render(command))
    return "\n".join(lines) + "\n"


def _render(command: list[str]) -> str:
    """One command over several lines: a line per flag, so it reads like the recipe."""
    parts: list[list[str]] = [[]]
    for token in command:
        # `accelerate launch` keeps its own flags on the first line, up to the script
        in_launcher = len(parts) == 1 and parts[0][:1] == ["accelerate"]
        breaks = token.endswith(".py") if in_launcher else token.startswith("--")
        if breaks and parts[-1]:
            parts.append([])
        parts[-1].append(token)
    return " \\\n    ".join(shlex.join(part) for part in parts)


def write_musubi_export(project: Project) -> Path:
    """Write export/musubi/{dataset.toml, run.sh}; a different existing file is kept as .bak."""
    export = musubi_export(project)
    folder = export_dir(project)
    _replace_keeping_backup(folder / "dataset.toml", export.dataset_toml)
    _replace_keeping_backup(folder / "run.sh", export.script, executable=True)
    for name, text in export.video_lists.items():
        _replace_keeping_backup(folder / name, text)
    return folder


def _replace_keeping_backup(path: Path, text: str, executable: bool = False) -> None:
    if path.exists():
        old = path.read_text(encoding="utf-8", errors="replace")
        if old == text:
            return
        atomic_write_text(path.with_name(path.name + ".bak"), old)
    atomic_write_text(path, text, executable=executable)  # modes from the user's umask
