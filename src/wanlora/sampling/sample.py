"""`wanlora sample`: images and clips from the project's experts with their trained LoRAs.

    prompts -> our umT5 embeddings -> (high expert + high LoRA | low expert + low LoRA) -> VAE

Outputs go to output/samples/ as PNGs named by prompt index, seed and LoRA strengths
(`p00_seed42_high1_low1.png`; outputs.OutputLayout names them), never overwriting: a name in
use gets `_v2`, `_v3`, ... With `compare`, the same seeds are rendered without the LoRAs
(strength 0) and a grid puts both side by side (`compare_seed42_high1_low1.png`). Each PNG carries its settings as JSON
in a `wanlora` text chunk (the report reads it). With `frames` > 1 (`--frames`, `[sample]
frames`) each sample is also an H.264 .mp4 beside the PNG of its first frame (files.py);
the --compare grid is then of first frames. Each expert guides with its own scale
(settings.guidance_scales). Image-to-video recipes (I2V-A14B) start every clip from a first
frame (`image`, default [sample] image; i2v.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from ..cache.build import default_device
from ..cache.placement import place_model, report_fallback
from ..device_memory import free_device_memory
from ..errors import WanloraError
from ..lora.file import lora_file_settings, read_lora_file
from ..lora.inject import add_lora, load_lora_state_dict, set_lora_multiplier
from ..models.dit import infer_dit_info, load_dit
from ..models.files import loaded_bytes
from ..models.precision import MIXED_PRECISION_DTYPES
from ..models.registry import resolve_model_path
from ..models.text_encoder import load_text_encoder, load_tokenizer
from ..models.vae import load_vae
from ..outputs import OutputLayout
from ..recipes import Project
from ..recipes.schema import RecipeConfig
from .files import PNG_KEY, read_png_info, save_png, save_sample  # noqa: F401 (re-exported)
from .i2v import start_image
from .pipeline import DEFAULT_NEGATIVE_PROMPT, RenderSpec, needs_offload, render
from .settings import clip_frames, guidance_scales, video_fps

log = logging.getLogger(__name__)

# --- the project's models ---------------------------------------------------------------


def ordered_experts(config: RecipeConfig) -> list[str]:
    """The experts, high-noise first (the one used for t >= boundary); checks the layout."""
    names = sorted(config.experts, key=lambda e: -config.experts[e].min_timestep)
    if len(names) > 2:
        raise WanloraError(f"recipe {config.recipe}: sampling supports one or two experts")
    if len(names) == 2 and config.boundary is None:
        raise WanloraError(
            f"recipe {config.recipe} has two experts but no boundary",
            "set boundary = 0.875 (Wan 2.2 T2V A14B) at the top of wanlora.toml",
        )
    return names


def _path(project: Project, value: str, what: str) -> Path:
    path = resolve_model_path(value, project.models_dir, project.root)
    if not path.exists():
        raise WanloraError(
            f"{path}: {what} not found",
            f"run `wanlora download {project.root}` or set its path in wanlora.toml",
        )
    return path


def dit_path(project: Project, expert: str) -> Path:
    return _path(project, project.config.experts[expert].dit, f"DiT file of the {expert} expert")


def encode_prompts(
    project: Project, prompts: list[str], device: torch.device
) -> list[torch.Tensor]:
    """umT5 embeddings (L_i, dim) per prompt, bf16 on the CPU, encoded as the training cache.

    The encoder is loaded on `device` when it fits there (the cache's rule, cache/placement.py:
    the card's free memory now, or training.max_vram_gb), else on the CPU; used one prompt at a
    time and freed before returning.
    """
    m = project.config.models
    encoder_path = _path(project, m.text_encoder, "text encoder")
    tokenizer_path = _path(project, m.tokenizer, "tokenizer")
    placement = place_model(
        encoder_path, torch.bfloat16, device, project.config.training.max_vram_gb
    )
    report_fallback("text encoder", placement, f"encoding {len(prompts)} sample prompts")
    device = placement.device
    encoder = load_text_encoder(
        encoder_path, load_tokenizer(tokenizer_path), dtype=torch.bfloat16, device=device
    )
    try:
        with torch.no_grad():
            return [encoder.encode([p])[0].to("cpu", torch.bfloat16) for p in prompts]
    finally:
        del encoder
        free_device_memory(device)


def load_vae_for(project: Project, device: torch.device):
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = torch.float32 if device.type == "cpu" else dtypes[project.config.models.vae_dtype]
    path = _path(project, project.config.models.vae, "VAE")
    return load_vae(path, dtype=dtype, device=device, kind=project.config.vae_kind)


def inference_dtype(project: Project, path: Path, device: torch.device) -> torch.dtype:
    """The DiT's compute dtype: float32 on the CPU, else the file's (fp16/bf16) or the recipe's."""
    if device.type == "cpu":
        return torch.float32
    info = infer_dit_info(path)
    if info.compute_dtype is not None:
        return info.compute_dtype
    wanted = MIXED_PRECISION_DTYPES[project.config.training.mixed_precision]
    return torch.bfloat16 if wanted == torch.float32 else wanted


def estimated_bytes(path: Path, dtype: torch.dtype) -> int:
    """The size of a DiT loaded in `dtype`, from its header (no weights read)."""
    return loaded_bytes(path, dtype)


def attach_lora(model: torch.nn.Module, path: Path, strength: float = 1.0) -> None:
    """Put a saved LoRA file on a DiT (frozen), scaled by `strength`."""
    try:
        tensors, _metadata = read_lora_file(path)
        add_lora(model, lora_file_settings(tensors))
        load_lora_state_dict(model, tensors)
    except WanloraError:
        raise
    except Exception as exc:
        raise WanloraError(
            f"{path}: cannot use this LoRA on the DiT ({exc})",
            "it was trained for another model; retrain or point at the right DiT",
        ) from None
    model.requires_grad_(False)
    set_lora_multiplier(model, strength)


# --- output files ---------------------------------------------------------------------------


def format_strength(value: float) -> str:
    return f"{value:g}"


def strength_tag(strengths: dict[str, float]) -> str:
    """`high1_low0.5`: the LoRA strengths, as they appear in file names."""
    return "_".join(f"{name}{format_strength(s)}" for name, s in strengths.items())


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def grid_image(
    rows: list[list[Image.Image]], column_titles: list[str], row_titles: list[str]
) -> Image.Image:
    """Images in a grid with a title above each column and a caption above each row."""
    cell_w = max(im.width for row in rows for im in row)
    cell_h = max(im.height for row in rows for im in row)
    scale = max(1, 256 // cell_w)  # tiny images are enlarged (nearest) so labels fit
    cell_w, cell_h = cell_w * scale, cell_h * scale
    pad, head, caption = 8, 30, 24
    columns = max(len(r) for r in rows)
    width = pad + columns * (cell_w + pad)
    height = head + len(rows) * (caption + cell_h + pad)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    title_font, caption_font = _font(18), _font(14)
    for c, title in enumerate(column_titles):
        draw.text((pad + c * (cell_w + pad), 6), title, fill=(20, 20, 20), font=title_font)
    y = head
    for row, title in zip(rows, row_titles, strict=True):
        limit = max(10, width // 8)
        text = title if len(title) <= limit else title[: limit - 1] + "…"
        draw.text((pad, y + 4), text, fill=(80, 80, 80), font=caption_font)
        y += caption
        for c, image in enumerate(row):
            if scale > 1:
                image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
            grid.paste(image, (pad + c * (cell_w + pad), y))
        y += cell_h + pad
    return grid


# --- the command ---------------------------------------------------------------------------


@dataclass
class SampleResult:
    images: list[Path]  # with the LoRAs, one per (prompt, seed)
    base_images: list[Path] = field(default_factory=list)  # without (compare)
    videos: list[Path] = field(default_factory=list)  # the .mp4 files, with frames > 1
    grid: Path | None = None
    offloaded: bool = False
    # (expert, timestep) of every transformer call and the residency moves, for checks
    timesteps_seen: list[tuple[str, float]] = field(default_factory=list)
    residency_events: list[tuple[str, str]] = field(default_factory=list)


def sample_project(
    project: Project,
    prompts: list[str],
    *,
    seeds: list[int] | None = None,
    steps: int | None = None,
    width: int | None = None,
    height: int | None = None,
    strengths: dict[str, float] | None = None,
    compare: bool = False,
    negative_prompt: str | None = None,
    guidance_scale: float | None = None,
    frames: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    offload: bool | None = None,
    batch_size: int = 4,
    out_dir: Path | None = None,
    image: Path | None = None,
) -> SampleResult:
    """Render every prompt at every seed with the trained LoRAs (and without, if `compare`).

    strengths: expert -> LoRA multiplier (default 1 each; 0 leaves that expert's LoRA off,
    and its file need not exist). offload: None decides from free VRAM whether the two
    experts can both stay on the GPU; True forces the one-at-a-time path. guidance_scale:
    one scale for every expert (default: each expert's, settings.guidance_scales). frames:
    default [sample] frames; rounded to 4n+1 (logged). image: the first frame of
    image-to-video samples (default [sample] image; refused for text-to-video recipes).
    """
    config = project.config
    s = config.sample
    if not prompts:
        raise WanloraError(
            "no prompts", 'pass -p "a prompt" or set [sample] prompts in wanlora.toml'
        )
    names = ordered_experts(config)
    guidance = guidance_scales(config, names, guidance_scale)
    frames, note = clip_frames(s.frames if frames is None else frames)
    if note:
        log.warning(note)
    device = device or default_device()
    seeds = list(seeds) if seeds else [s.seed]
    width, height = width or s.width, height or s.height
    for side in (width, height):
        if side < 16 or side % 16:
            raise WanloraError(
                f"image size {width}x{height}: each side must be a multiple of 16",
                "pass e.g. --size 960x960",
            )
    first_frame = start_image(project, image, width, height)  # None: text-to-video
    strengths = {name: 1.0 for name in names} | dict(strengths or {})
    unknown = set(strengths) - set(names)
    if unknown:
        raise WanloraError(f"no expert named {sorted(unknown)}", f"experts: {', '.join(names)}")
    layout = OutputLayout.of(project)
    lora_paths = {name: layout.lora(name) for name in names}
    for name in names:
        if strengths[name] != 0 and not lora_paths[name].exists():
            raise WanloraError(
                f"{lora_paths[name]}: no trained LoRA for the {name} expert",
                f"run `wanlora train {project.root}` first, or sample with its strength at 0",
            )
    if compare and all(strengths[n] == 0 for n in names):
        raise WanloraError("--compare needs a LoRA strength above 0", "drop --compare")

    # 1. text: our encoder, then freed before any DiT is loaded
    negative_text = DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
    encoded = encode_prompts(project, [*prompts, negative_text], device)
    contexts, negative = encoded[:-1], encoded[-1]

    # 2. models: decide residency from the sizes before loading
    paths = {name: dit_path(project, name) for name in names}
    dtype = dtype or inference_dtype(project, paths[names[0]], device)
    if offload is None:
        offload = needs_offload([estimated_bytes(p, dtype) for p in paths.values()], device)
    if offload:
        log.info("the experts do not both fit on %s: one at a time (the other on the CPU)", device)
    experts = {}
    for i, name in enumerate(names):
        target = device if (i == 0 or not offload) else torch.device("cpu")
        experts[name], _info = load_dit(
            paths[name], dtype=dtype, device=target, task=config.dit_task
        )
        if strengths[name] != 0:
            attach_lora(experts[name], lora_paths[name], strengths[name])
    vae = load_vae_for(project, device)

    # 3. render: with the LoRAs, then (compare) the same seeds without
    pairs = [(i, seed) for i in range(len(prompts)) for seed in seeds]
    spec = RenderSpec(
        contexts=[contexts[i] for i, _ in pairs],
        seeds=[seed for _, seed in pairs],
        negative=negative,
        steps=steps or s.steps,
        width=width,
        height=height,
        guidance=guidance,
        shift=s.shift,
        boundary=config.boundary if len(names) == 2 else None,
        batch_size=batch_size,
        frames=frames,
        image=first_frame,
    )
    fps = video_fps(config.task)
    out_dir = out_dir or layout.samples_dir
    tag = strength_tag(strengths)
    result = SampleResult(images=[], offloaded=offload)
    common = {
        "steps": spec.steps,
        "size": [width, height],
        "guidance": guidance,
        "shift": spec.shift,
        "boundary": spec.boundary,
        "recipe": config.recipe,
        **({"image": str(image or s.image)} if first_frame is not None else {}),
    }
    lora_images = render(experts, vae, spec, device=device, dtype=dtype, offload=offload)
    for (i, seed), clip in zip(pairs, lora_images, strict=True):
        info = {"prompt": prompts[i], "prompt_index": i, "seed": seed, "strengths": strengths}
        saved = save_sample(clip, out_dir, layout.sample_stem(i, seed, tag), info | common, fps=fps)
        result.images.append(saved.image)
        result.videos.extend([saved.video] if saved.video else [])
    if compare:
        for module in experts.values():
            set_lora_multiplier(module, 0.0)
        base_images = render(experts, vae, spec, device=device, dtype=dtype, offload=offload)
        zero = {name: 0.0 for name in names}
        for (i, seed), clip in zip(pairs, base_images, strict=True):
            info = {"prompt": prompts[i], "prompt_index": i, "seed": seed, "strengths": zero}
            stem = layout.sample_stem(i, seed, "base")
            saved = save_sample(clip, out_dir, stem, info | common, fps=fps)
            result.base_images.append(saved.image)
            result.videos.extend([saved.video] if saved.video else [])
        lora_title = "LoRA " + ", ".join(f"{n} {format_strength(v)}" for n, v in strengths.items())
        grid = grid_image(
            [[b[0], w[0]] for b, w in zip(base_images, lora_images, strict=True)],
            ["without LoRA", lora_title],
            [f"p{i:02d} seed {seed}: {prompts[i]}" for i, seed in pairs],
        )
        grid_info = {"kind": "compare", "prompts": prompts, "seeds": seeds, "strengths": strengths}
        stem = layout.compare_stem(seeds, tag)
        result.grid = save_png(grid, out_dir, stem, grid_info | common)
    result.timesteps_seen = spec.timesteps_seen
    result.residency_events = spec.residency_events
    del experts, vae
    free_device_memory(device)
    return result
