"""`wanlora sample` for TI2V-5B: one model with its LoRA, text-to-video or image-to-video.

    prompts -> our umT5 embeddings -> the 5B DiT + its LoRA (ti2v.render_ti2v) -> Wan 2.2 VAE

No experts and no boundary: the recipe's one model (`main`) covers every timestep. With an
image (`--image`, else `[sample] image`) the video starts from it (image-to-video); without,
text-to-video. One frame is saved as a PNG, more as an MP4 at the model's 24 fps, named as
the two-expert samples are (OutputLayout.sample_stem: `p00_seed42_main1.mp4`), never
overwriting; `compare` renders the same seeds without the LoRA and grids the last frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..cache.build import default_device
from ..dataset.clips import TI2V_5B_FPS
from ..device_memory import free_device_memory
from ..errors import WanloraError
from ..lora.inject import set_lora_multiplier
from ..models.dit import load_dit
from ..outputs import OutputLayout
from ..recipes import Project
from .files import save_sample as save_frames
from .pipeline import DEFAULT_NEGATIVE_PROMPT
from .sample import (
    SampleResult,
    attach_lora,
    dit_path,
    encode_prompts,
    format_strength,
    grid_image,
    inference_dtype,
    load_vae_for,
    save_png,
    strength_tag,
)
from .settings import guidance_scales
from .ti2v import Ti2vSpec, check_ti2v_size, fit_image, render_ti2v


def sample_image_path(project: Project, image: str | Path | None) -> Path | None:
    """The conditioning image: the given one, else `[sample] image` (relative to the project)."""
    value = image if image is not None else project.config.sample.image
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else project.root / path


def save_sample(frames: np.ndarray, directory: Path, stem: str, info: dict) -> Path:
    """One frame: a PNG; more: an MP4 at the 5B model's frame rate beside the PNG of its
    first frame (files.save_sample). Returns the PNG, or the MP4 of a clip."""
    images = [Image.fromarray(frame, "RGB") for frame in frames]
    saved = save_frames(images, directory, stem, info, fps=TI2V_5B_FPS)
    return saved.video or saved.image


def sample_ti2v_project(
    project: Project,
    prompts: list[str],
    *,
    seeds: list[int] | None = None,
    steps: int | None = None,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    image: str | Path | None = None,
    strengths: dict[str, float] | None = None,
    compare: bool = False,
    negative_prompt: str | None = None,
    guidance_scale: float | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    out_dir: Path | None = None,
) -> SampleResult:
    """Render every prompt at every seed with the trained LoRA (and without, if `compare`)."""
    config, s = project.config, project.config.sample
    if not prompts:
        raise WanloraError(
            "no prompts", 'pass -p "a prompt" or set [sample] prompts in wanlora.toml'
        )
    (name,) = config.experts  # one model over all timesteps
    device = device or default_device()
    seeds = list(seeds) if seeds else [s.seed]
    width, height, frames = width or s.width, height or s.height, frames or s.frames
    check_ti2v_size(width, height, frames)
    strengths = {name: 1.0} | dict(strengths or {})
    if set(strengths) != {name}:
        raise WanloraError(f"no expert named {sorted(set(strengths) - {name})}", f"use {name}")
    layout = OutputLayout.of(project)
    lora = layout.lora(name)
    if strengths[name] != 0 and not lora.exists():
        raise WanloraError(
            f"{lora}: no trained LoRA",
            f"run `wanlora train {project.root}` first, or sample with --strength 0",
        )
    if compare and strengths[name] == 0:
        raise WanloraError("--compare needs a LoRA strength above 0", "drop --compare")
    image_path = sample_image_path(project, image)
    pixels = fit_image(image_path, width, height) if image_path is not None else None

    negative_text = DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
    encoded = encode_prompts(project, [*prompts, negative_text], device)
    path = dit_path(project, name)
    dtype = dtype or inference_dtype(project, path, device)
    model, _info = load_dit(path, dtype=dtype, device=device, task=config.dit_task)
    if strengths[name] != 0:
        attach_lora(model, lora, strengths[name])
    vae = load_vae_for(project, device)

    pairs = [(i, seed) for i in range(len(prompts)) for seed in seeds]
    spec = Ti2vSpec(
        contexts=[encoded[i] for i, _ in pairs],
        seeds=[seed for _, seed in pairs],
        negative=encoded[-1],
        steps=steps or s.steps,
        width=width,
        height=height,
        frames=frames,
        guidance_scale=guidance_scales(config, [name], guidance_scale)[name],
        shift=s.shift,
        image=pixels,
    )
    common = {
        "mode": "image-to-video" if pixels is not None else "text-to-video",
        "image": str(image_path) if image_path is not None else None,
        "frames": frames,
        "steps": spec.steps,
        "size": [width, height],
        "guidance_scale": spec.guidance_scale,
        "shift": spec.shift,
        "recipe": config.recipe,
    }
    out_dir = out_dir or layout.samples_dir
    tag = strength_tag(strengths)
    result = SampleResult(images=[])
    videos = render_ti2v(model, vae, spec, device=device, dtype=dtype)
    for (i, seed), video in zip(pairs, videos, strict=True):
        info = {"prompt": prompts[i], "prompt_index": i, "seed": seed, "strengths": strengths}
        stem = layout.sample_stem(i, seed, tag)
        result.images.append(save_sample(video, out_dir, stem, info | common))
    if compare:
        set_lora_multiplier(model, 0.0)
        base = render_ti2v(model, vae, spec, device=device, dtype=dtype)
        for (i, seed), video in zip(pairs, base, strict=True):
            info = {"prompt": prompts[i], "prompt_index": i, "seed": seed, "strengths": {name: 0.0}}
            stem = layout.sample_stem(i, seed, "base")
            result.base_images.append(save_sample(video, out_dir, stem, info | common))
        grid = grid_image(
            [
                [Image.fromarray(b[-1]), Image.fromarray(w[-1])]
                for b, w in zip(base, videos, strict=True)
            ],
            ["without LoRA (last frame)", f"LoRA {format_strength(strengths[name])}"],
            [f"p{i:02d} seed {seed}: {prompts[i]}" for i, seed in pairs],
        )
        grid_info = {"kind": "compare", "prompts": prompts, "seeds": seeds, "strengths": strengths}
        result.grid = save_png(grid, out_dir, layout.compare_stem(seeds, tag), grid_info | common)
    result.timesteps_seen = [(name, last) for _first, last in spec.timesteps_seen]
    del model, vae
    free_device_memory(device)
    return result
