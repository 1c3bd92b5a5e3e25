"""`wanlora cache`: latents for every image and video clip, umT5 embeddings for every caption.

Entries are keyed by content (see keys.py), so unchanged items are reused, changed images or
captions are recomputed, and entries no item refers to any more are removed. The VAE and the
text encoder are loaded only when something is missing, one at a time, and freed before
returning, so the DiT (loaded next by training) never shares memory with them. Each runs on
the cache's device when it fits the card's free memory (or training.max_vram_gb), else on the
CPU, said in one log line (placement.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import faults
from ..dataset.images import load_bucketed_image
from ..dataset.items import DatasetItem, load_items
from ..dataset.video_frames import load_video_clips
from ..device_memory import free_device_memory
from ..errors import WanloraError
from ..models.registry import resolve_model_path
from ..recipes import Project
from . import i2v_conditioning as i2v
from .keys import (
    clip_latent_key,
    file_fingerprint,
    latent_key,
    sha256_file,
    text_key,
    video_sha256,
)
from .placement import place_model, report_fallback
from .store import read_entry, write_entry

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class CacheEntry:
    item: DatasetItem
    latent_path: Path
    text_path: Path
    # I2V tasks: the mask + first-frame latent (i2v_conditioning.py); None for the others
    conditioning_path: Path | None = None


@dataclass
class CacheResult:
    entries: list[CacheEntry]
    latents_computed: int = 0
    latents_reused: int = 0
    texts_computed: int = 0
    texts_reused: int = 0
    conditionings_computed: int = 0
    conditionings_reused: int = 0
    removed: list[Path] = field(default_factory=list)
    # "vae" / "text_encoder" -> the device it ran on (placement.py); absent: not loaded
    devices: dict[str, str] = field(default_factory=dict)


def model_paths(project: Project) -> dict[str, Path]:
    m = project.config.models
    return {
        kind: resolve_model_path(value, project.models_dir, project.root)
        for kind, value in (
            ("vae", m.vae),
            ("text_encoder", m.text_encoder),
            ("tokenizer", m.tokenizer),
        )
    }


def _require(path: Path, what: str, project: Project) -> Path:
    if not path.exists():
        raise WanloraError(
            f"{path}: {what} not found",
            f"run `wanlora download {project.root}` or set its path in wanlora.toml [models]",
        )
    return path


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def build_cache(
    project: Project,
    *,
    device: torch.device | None = None,
    items: list[DatasetItem] | None = None,
    progress: Progress | None = None,
) -> CacheResult:
    """Make sure every item has a verified latent and text embedding in project.cache_dir."""
    device = device or default_device()
    items = load_items(project) if items is None else items
    paths = model_paths(project)
    latents_dir = project.cache_dir / "latents"
    texts_dir = project.cache_dir / "text"
    vae_dtype = project.config.models.vae_dtype
    max_vram_gb = project.config.training.max_vram_gb  # a user cap counts as the card's size

    vae_id = f"{file_fingerprint(_require(paths['vae'], 'VAE', project))}:{vae_dtype}"
    enc_id = ":".join(
        [
            file_fingerprint(_require(paths["text_encoder"], "text encoder", project)),
            file_fingerprint(_require(paths["tokenizer"], "tokenizer", project)),
            "bf16",
        ]
    )
    content: dict[Path, str] = {}  # every clip of a video shares one hash of its file

    def latent_name(item: DatasetItem) -> str:
        if item.image_path not in content:
            content[item.image_path] = (
                sha256_file(item.image_path) if item.clip is None else video_sha256(item.image_path)
            )
        if item.clip is None:
            return latent_key(content[item.image_path], item.bucket, vae_id)
        return clip_latent_key(
            content[item.image_path], item.clip.frame_indices, item.bucket, vae_id
        )

    conditioned = project.config.dit_task == "i2v"
    entries = [
        CacheEntry(
            item=item,
            latent_path=latents_dir / f"{latent_name(item)}.safetensors",
            text_path=texts_dir / f"{text_key(item.caption, enc_id)}.safetensors",
            conditioning_path=i2v.conditioning_path(
                project.cache_dir, content[item.image_path], item, vae_id
            )
            if conditioned
            else None,
        )
        for item in items
    ]
    result = CacheResult(entries=entries)

    missing_latents = [e for e in entries if read_entry(e.latent_path, "latents") is None]
    result.latents_reused = len(entries) - len(missing_latents)
    missing_conditionings = [
        e
        for e in entries
        if e.conditioning_path and read_entry(e.conditioning_path, i2v.TENSOR_NAME) is None
    ]
    result.conditionings_reused = sum(bool(e.conditioning_path) for e in entries) - len(
        missing_conditionings
    )
    if missing_latents or missing_conditionings:
        placement = place_model(paths["vae"], DTYPES[vae_dtype], device, max_vram_gb)
        count = len(missing_latents) + len(missing_conditionings)
        report_fallback("VAE", placement, f"encoding {count} image(s) or clip(s)")
        result.devices["vae"] = str(placement.device)
        _encode_latents(
            missing_latents,
            paths["vae"],
            DTYPES[vae_dtype],
            placement.device,
            progress,
            project.config.vae_kind,
            conditionings=missing_conditionings,
        )
        result.latents_computed = len(missing_latents)
        result.conditionings_computed = len(missing_conditionings)

    # identical captions share one entry
    missing_texts: dict[Path, str] = {}
    for e in entries:
        if e.text_path not in missing_texts and read_entry(e.text_path, "context") is None:
            missing_texts[e.text_path] = e.item.caption
    result.texts_reused = len({e.text_path for e in entries}) - len(missing_texts)
    if missing_texts:
        placement = place_model(paths["text_encoder"], torch.bfloat16, device, max_vram_gb)
        report_fallback("text encoder", placement, f"encoding {len(missing_texts)} captions")
        result.devices["text_encoder"] = str(placement.device)
        _encode_texts(
            missing_texts, paths["text_encoder"], paths["tokenizer"], placement.device, progress
        )
        result.texts_computed = len(missing_texts)

    result.removed = _remove_stale(
        entries, latents_dir, texts_dir, project.cache_dir / i2v.CONDITIONING_DIR
    )
    return result


def _pixels(entries: list[CacheEntry]) -> Iterator[tuple[CacheEntry, np.ndarray]]:
    """(entry, uint8 pixels): an image (H, W, 3), or a clip's frames (F, H, W, 3), each video
    decoded once for all its clips that need encoding."""
    clips: dict[tuple[Path, tuple[int, int]], list[CacheEntry]] = {}
    for e in entries:
        if e.item.clip is None:
            yield e, load_bucketed_image(e.item.image_path, e.item.bucket)
        else:
            clips.setdefault((e.item.image_path, e.item.bucket), []).append(e)
    for (video, bucket), group in clips.items():
        by_clip = {e.item.clip: e for e in group}
        for clip, frames in load_video_clips(video, list(by_clip), bucket):
            yield by_clip[clip], frames


def _encode_latents(
    entries, vae_path, dtype, device, progress, kind="wan2.1", conditionings=()
) -> None:
    """Latents of `entries`, and the I2V conditioning of `conditionings`, in one VAE load."""
    from ..models import encode_latents, encode_video_latents, load_vae

    if entries:
        log.info("encoding %d image(s) or clip(s) with the VAE", len(entries))
    if conditionings:
        log.info("encoding %d I2V first-frame conditioning(s) with the VAE", len(conditionings))
    needs_latent = {id(e) for e in entries}
    needs_conditioning = {id(e) for e in conditionings}
    todo = list(entries) + [e for e in conditionings if id(e) not in needs_latent]
    vae = load_vae(vae_path, dtype=dtype, device=device, kind=kind)  # the task's VAE
    try:
        for i, (e, pixels) in enumerate(_pixels(todo)):
            if id(e) in needs_conditioning:
                _write_conditioning(vae, e, pixels)
            if id(e) not in needs_latent:
                continue
            with torch.no_grad():
                if e.item.clip is None:
                    latents = encode_latents(vae, pixels)[0]
                else:
                    latents = encode_video_latents(vae, pixels)[0]
            write_entry(
                e.latent_path,
                "latents",
                latents,
                {
                    "image": e.item.image_path.name,
                    "bucket": f"{e.item.bucket[0]}x{e.item.bucket[1]}",
                    **({"clip": e.item.clip.name} if e.item.clip else {}),
                },
            )
            faults.point("cache_write", e.latent_path)  # test hook (faults.py)
            if progress:
                progress("latents", i + 1, len(entries))
    finally:
        del vae
        free_device_memory(device)


def _write_conditioning(vae, e: CacheEntry, pixels: np.ndarray) -> None:
    with torch.no_grad():
        conditioning = i2v.encode_conditioning(vae, i2v.first_frame(pixels), e.item.frames)
    info = {"image": e.item.image_path.name, "bucket": f"{e.item.bucket[0]}x{e.item.bucket[1]}"}
    write_entry(e.conditioning_path, i2v.TENSOR_NAME, conditioning, info)
    faults.point("cache_write", e.conditioning_path)  # test hook (faults.py)


def _encode_texts(missing: dict[Path, str], encoder_path, tokenizer_path, device, progress) -> None:
    from ..models import load_text_encoder, load_tokenizer

    log.info("encoding %d caption(s) with umT5", len(missing))
    encoder = load_text_encoder(
        encoder_path, load_tokenizer(tokenizer_path), dtype=torch.bfloat16, device=device
    )
    try:
        for i, (path, caption) in enumerate(missing.items()):
            with torch.no_grad():
                context = encoder.encode([caption])[0]
            write_entry(path, "context", context.to(torch.bfloat16), {"caption": caption[:200]})
            faults.point("cache_write", path)  # test hook (faults.py)
            if progress:
                progress("text", i + 1, len(missing))
    finally:
        del encoder
        free_device_memory(device)


def _remove_stale(entries: list[CacheEntry], *dirs: Path) -> list[Path]:
    """Delete cache files no current item uses (only our own *.safetensors in cache/)."""
    live = {e.latent_path for e in entries} | {e.text_path for e in entries}
    live |= {e.conditioning_path for e in entries}
    removed = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in directory.glob("*.safetensors"):
            if path not in live:
                path.unlink()
                removed.append(path)
    return removed


def load_cached_tensors(entries: list[CacheEntry]) -> list[tuple[torch.Tensor, ...]]:
    """(latents, context) per entry, verified, plus the I2V conditioning where the task has
    one; a bad entry here means the cache changed under us."""
    tensors = []
    for e in entries:
        latents = read_entry(e.latent_path, "latents")
        context = read_entry(e.text_path, "context")
        extra = ()
        if e.conditioning_path is not None:
            extra = (read_entry(e.conditioning_path, i2v.TENSOR_NAME),)
        if latents is None or context is None or None in extra:
            raise WanloraError(
                f"{e.latent_path.parent.parent}: cache entry for {_label(e.item)} is missing or corrupt",
                "run the command again; the cache is rebuilt automatically",
            )
        tensors.append((latents, context, *extra))
    return tensors


def _label(item: DatasetItem) -> str:
    return (
        item.image_path.name if item.clip is None else f"{item.image_path.name} ({item.clip.name})"
    )
