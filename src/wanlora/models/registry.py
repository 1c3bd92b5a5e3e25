"""Model files the recipes use: where each comes from and where it lives on disk.

A recipe names a model by registry id (e.g. "wan22-t2v-high-fp16"); a project may instead
give a path. Downloaded files live in a models folder shared between projects, as
<models_dir>/<repo>/<filename>, so two projects never download the same 28 GB twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelFile:
    """One downloadable model: a file (or, for a tokenizer, a few files) in a hub repo."""

    id: str
    kind: str  # "dit" | "vae" | "text_encoder" | "tokenizer"
    repo: str
    files: tuple[str, ...]
    approx_bytes: int
    description: str
    optional_files: tuple[str, ...] = field(default=())

    @property
    def is_folder(self) -> bool:
        """A tokenizer is a folder of files; the others are a single file."""
        return self.kind == "tokenizer"

    def local_path(self, models_dir: Path) -> Path:
        base = Path(models_dir) / self.repo
        return base if self.is_folder else base / self.files[0]


GB = 1000**3
MB = 1000**2

MODEL_FILES: dict[str, ModelFile] = {
    m.id: m
    for m in [
        ModelFile(
            id="wan22-t2v-high-fp16",
            kind="dit",
            repo="Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
            files=("split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors",),
            approx_bytes=int(28.6 * GB),
            description="Wan 2.2 T2V A14B high-noise expert DiT (fp16)",
        ),
        ModelFile(
            id="wan22-t2v-low-fp16",
            kind="dit",
            repo="Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
            files=("split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors",),
            approx_bytes=int(28.6 * GB),
            description="Wan 2.2 T2V A14B low-noise expert DiT (fp16)",
        ),
        ModelFile(
            id="wan22-i2v-high-fp16",
            kind="dit",
            repo="Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
            files=("split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors",),
            approx_bytes=int(28.6 * GB),
            description="Wan 2.2 I2V A14B high-noise expert DiT (fp16)",
        ),
        ModelFile(
            id="wan22-i2v-low-fp16",
            kind="dit",
            repo="Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
            files=("split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors",),
            approx_bytes=int(28.6 * GB),
            description="Wan 2.2 I2V A14B low-noise expert DiT (fp16)",
        ),
        ModelFile(
            id="wan22-ti2v-5b-fp16",
            kind="dit",
            repo="Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
            files=("split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors",),
            approx_bytes=int(10.0 * GB),
            description="Wan 2.2 TI2V 5B DiT (fp16)",
        ),
        ModelFile(
            id="wan21-t2v-14b-fp8",
            kind="dit",
            repo="Comfy-Org/Wan_2.1_ComfyUI_repackaged",
            files=("split_files/diffusion_models/wan2.1_t2v_14B_fp8_e4m3fn.safetensors",),
            approx_bytes=int(14.3 * GB),
            description="Wan 2.1 T2V 14B DiT (fp8 e4m3fn)",
        ),
        ModelFile(
            id="wan21-vae",
            kind="vae",
            repo="Comfy-Org/Wan_2.1_ComfyUI_repackaged",
            files=("split_files/vae/wan_2.1_vae.safetensors",),
            approx_bytes=int(254 * MB),
            description="Wan 2.1 VAE (used by Wan 2.2 A14B too)",
        ),
        ModelFile(
            id="wan22-vae",
            kind="vae",
            repo="Comfy-Org/Wan_2.2_ComfyUI_Repackaged",
            files=("split_files/vae/wan2.2_vae.safetensors",),
            # Size not confirmed (the file was not inspected): 704.7M parameters at 16 bits,
            # as wan_2.1_vae.safetensors stores its 127M; an fp32 file is twice this,
            # which the truncation check (a lower bound) accepts.
            approx_bytes=int(1.41 * GB),
            description="Wan 2.2 VAE (Wan 2.2 TI2V 5B only)",
        ),
        ModelFile(
            id="umt5-xxl-enc-bf16",
            kind="text_encoder",
            repo="Wan-AI/Wan2.1-I2V-14B-720P",
            files=("models_t5_umt5-xxl-enc-bf16.pth",),
            approx_bytes=int(11.4 * GB),
            description="umT5-xxl text encoder, original Wan layout (bf16 .pth)",
        ),
        ModelFile(
            id="umt5-xxl-tokenizer",
            kind="tokenizer",
            repo="google/umt5-xxl",
            files=("spiece.model", "tokenizer_config.json", "special_tokens_map.json"),
            optional_files=("tokenizer.json",),
            approx_bytes=int(5 * MB),
            description="umT5 tokenizer (google/umt5-xxl)",
        ),
    ]
}


def resolve_model_path(value: str, models_dir: Path, project_root: Path) -> Path:
    """A registry id -> its place in the models folder; anything else is a path.

    Relative paths are relative to the project folder; ~ is expanded.
    """
    if value in MODEL_FILES:
        return MODEL_FILES[value].local_path(models_dir)
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (project_root / path)
