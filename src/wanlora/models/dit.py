"""Load a Wan DiT file in the original Wan key layout into diffusers' WanTransformer3DModel.

The files users download (ComfyUI repackaged Wan 2.2 / 2.1 .safetensors) keep the key names
of the original Wan code (`blocks.0.self_attn.q.weight`, sometimes behind a
`model.diffusion_model.` prefix). The architecture is read off the tensor shapes, so the
14B experts, the 1.3B and 5B models and the tiny test files all take the same path.

One key layout serves every Wan 2.2 task; only widths differ (W wan/modules/model.py):
- T2V-A14B expert: in 16, out 16 (the noisy latent).
- I2V-A14B expert: in 36 = 16 noisy latent + 4 mask + 16 image latent, out 16. No
  image-encoder (CLIP) branch, unlike Wan 2.1 I2V: diffusers' model with image_dim=None.
- TI2V-5B: dim 3072, 30 layers, in 48, out 48 (the Wan 2.2 VAE's channels); it takes
  per-token timesteps (see time_embedding.py).
diffusers' single-file loader converts none of the last two (it sends them to the Wan 2.1
I2V config with CLIP), hence our own config and key mapping.

Every Wan DiT uses attention heads of 128 channels, so heads = dim // 128
(14B: 5120 -> 40 heads, 5B: 3072 -> 24, 1.3B: 1536 -> 12, the tiny test model: 256 -> 2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from safetensors import safe_open

from wanlora.errors import WanloraError
from wanlora.models.assign import (
    assign_parameter,
    build_on_meta,
    check_fully_loaded,
    check_key_sets,
)
from wanlora.models.files import (
    DIT_TASKS,
    TASK_IN_CHANNELS,
    TASK_WORDS,
    dit_description,
    read_safetensors_header,
    require_kind,
    strip_comfy_prefix,
)
from wanlora.models.time_embedding import Float32TimeConditionEmbedder

WAN_HEAD_DIM = 128

# Original Wan module -> diffusers module, outside the transformer blocks.
TOP_LEVEL_MODULES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
# Bare parameters (not inside a Linear/Conv) outside the blocks.
TOP_LEVEL_PARAMETERS = {
    "head.modulation": "scale_shift_table",
}
# Original module inside `blocks.N.` -> diffusers module inside `blocks.N.`.
BLOCK_MODULES = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    # Wan calls the (affine) cross-attention norm norm3; diffusers calls it norm2.
    # Wan's norm1/norm2 have no weights, so nothing else is renamed.
    "norm3": "norm2",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
BLOCK_PARAMETERS = {
    "modulation": "scale_shift_table",
}
MODULE_LEAVES = ("weight", "bias")

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _invert(table: dict[str, str]) -> dict[str, str]:
    return {ours: original for original, ours in table.items()}


# (modules, parameters) for top-level keys [False] and block keys [True], each direction
_TO_DIFFUSERS = {
    False: (TOP_LEVEL_MODULES, TOP_LEVEL_PARAMETERS),
    True: (BLOCK_MODULES, BLOCK_PARAMETERS),
}
_TO_WAN = {block: (_invert(m), _invert(p)) for block, (m, p) in _TO_DIFFUSERS.items()}


def _map_key(name: str, tables: dict[bool, tuple[dict, dict]]) -> str | None:
    """Rename one key with `tables`, keeping `blocks.N.` and the weight/bias leaf."""
    match = _BLOCK_KEY.match(name)
    prefix, rest = (f"blocks.{match[1]}.", match[2]) if match else ("", name)
    modules, parameters = tables[match is not None]
    if rest in parameters:
        return prefix + parameters[rest]
    module, _, leaf = rest.rpartition(".")
    if module in modules and leaf in MODULE_LEAVES:
        return f"{prefix}{modules[module]}.{leaf}"
    return None


def wan_key_to_diffusers(name: str) -> str | None:
    """`blocks.3.self_attn.q.weight` -> `blocks.3.attn1.to_q.weight`; None if not a known key."""
    return _map_key(strip_comfy_prefix(name), _TO_DIFFUSERS)


def diffusers_key_to_wan(name: str) -> str | None:
    """The inverse of wan_key_to_diffusers (without the ComfyUI prefix)."""
    return _map_key(name, _TO_WAN)


@dataclass(frozen=True)
class DitInfo:
    """What a DiT file holds, read off its tensor shapes and dtypes."""

    path: Path
    dim: int
    ffn_dim: int
    num_layers: int
    num_heads: int
    in_channels: int
    out_channels: int
    text_dim: int
    freq_dim: int
    patch_size: tuple[int, int, int]
    file_dtype: torch.dtype
    # The dtype training must compute in: the file's dtype decides (fp16 file -> fp16,
    # bf16 -> bf16); None (fp8 or fp32 files) means "from the mixed-precision setting".
    compute_dtype: torch.dtype | None

    @property
    def task(self) -> str | None:
        """The task: "t2v" (in/out 16), "i2v" (in 36, out 16), "ti2v" (in/out 48), or None."""
        return DIT_TASKS.get((self.in_channels, self.out_channels))

    @property
    def vae_kind(self) -> str:
        """The VAE whose latents this DiT denoises: "wan2.2" (48 channels) or "wan2.1" (16)."""
        return "wan2.2" if self.out_channels == 48 else "wan2.1"

    @property
    def model_name(self) -> str:
        """A human name for the architecture (Wan 2.1 and 2.2 14B T2V share one)."""
        name = dit_description(self.dim, self.task, self.in_channels, self.out_channels)
        return name.removeprefix("a ").removeprefix("an ")

    def diffusers_config(self) -> dict:
        return {
            "patch_size": self.patch_size,
            "num_attention_heads": self.num_heads,
            "attention_head_dim": WAN_HEAD_DIM,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6,
        }


# The reference computes the time embedding MLP and its projection in float32 (weights
# upcast, autocast off); these tensors are therefore stored in float32 whatever `dtype` is
# (after fp8 rounding when asked, so the values are the reference's).
FLOAT32_TENSOR_PREFIXES = ("time_embedding.", "time_projection.")


def _file_dtype(tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> torch.dtype:
    """The dtype of the bulk of the weights (fp8 files keep some small tensors in fp16)."""
    elements: dict[torch.dtype, int] = {}
    for dtype, shape in tensors.values():
        if dtype.is_floating_point:
            elements[dtype] = elements.get(dtype, 0) + math.prod(shape)
    if not elements:
        raise WanloraError("DiT file has no floating-point tensors")
    return max(elements, key=elements.get)


COMPUTE_DTYPE_FOR_FILE = {torch.float16: torch.float16, torch.bfloat16: torch.bfloat16}


def infer_dit_info(path: str | Path) -> DitInfo:
    """Read the architecture and dtype of a Wan DiT file from its header (no weights read)."""
    path = Path(path)
    header = read_safetensors_header(path)
    require_kind(path, set(header), "dit")
    return dit_info_from_shapes(path, header)


def dit_info_from_shapes(
    path: Path, header: dict[str, tuple[torch.dtype, tuple[int, ...]]]
) -> DitInfo:
    """The architecture from tensor name -> (dtype, shape); `path` is only for messages."""
    tensors = {strip_comfy_prefix(n): v for n, v in header.items()}
    if "scaled_fp8" in tensors or any(n.endswith(".scale_weight") for n in tensors):
        raise WanloraError(
            f"{path} is a scaled-fp8 DiT (per-tensor scales), which this tool does not load",
            "use the plain fp8_e4m3fn or fp16 file the recipe names",
        )
    if any(n.startswith("img_emb.") for n in tensors):
        raise WanloraError(
            f"{path} is a Wan 2.1 image-to-video (I2V) DiT with an image encoder (CLIP) input, "
            "which this tool does not load",
            "use a Wan 2.2 file the recipe names (Wan 2.2 I2V has no image encoder)",
        )

    def shape(name: str) -> tuple[int, ...]:
        if name not in tensors:
            raise WanloraError(f"{path} is missing {name}; the file is incomplete or not a Wan DiT")
        return tensors[name][1]

    dim, in_channels, *patch = shape("patch_embedding.weight")
    if dim % WAN_HEAD_DIM:
        raise WanloraError(
            f"{path}: model width {dim} is not a multiple of the Wan head size {WAN_HEAD_DIM}",
            "this is not a Wan DiT file",
        )
    block_indices = {int(m.group(1)) for n in tensors if (m := _BLOCK_KEY.match(n))}
    num_layers = len(block_indices)
    if block_indices != set(range(num_layers)):
        raise WanloraError(f"{path}: transformer blocks are not numbered 0..{num_layers - 1}")
    patch_size = tuple(patch)
    file_dtype = _file_dtype(tensors)
    return DitInfo(
        path=path,
        dim=dim,
        ffn_dim=shape("blocks.0.ffn.0.weight")[0],
        num_layers=num_layers,
        num_heads=dim // WAN_HEAD_DIM,
        in_channels=in_channels,
        out_channels=shape("head.head.weight")[0] // math.prod(patch_size),
        text_dim=shape("text_embedding.0.weight")[1],
        freq_dim=shape("time_embedding.0.weight")[1],
        patch_size=patch_size,  # type: ignore[arg-type]
        file_dtype=file_dtype,
        compute_dtype=COMPUTE_DTYPE_FOR_FILE.get(file_dtype),
    )


def load_dit(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    fp8_round: bool = False,
    task: str | None = "t2v",
) -> tuple[WanTransformer3DModel, DitInfo]:
    """Load a Wan DiT .safetensors (original layout) into a frozen WanTransformer3DModel.

    dtype: storage dtype of the floating-point tensors; None keeps the file's dtype.
        torch.float8_e4m3fn stores the weights in fp8 (no scaling). The time embedding and
        time projection are always stored in float32 (the reference computes them so).
    fp8_round: reproduce the reference's fp8_base: every floating-point tensor is rounded
        through float8_e4m3fn (no scaling) and stored in `dtype` (fp8 values are exact in
        fp16 and bf16), so the model computes on fp8-valued weights.
    task: the task the recipe trains: "t2v" (in 16 / out 16), "i2v" (Wan 2.2 I2V-A14B
        expert, in 36 / out 16) or "ti2v" (Wan 2.2 TI2V-5B, in 48 / out 48). A file of
        another task is refused, naming what it is. None accepts any Wan-layout DiT.

    Time embedding: computed as the reference does, sinusoid in float64, then the MLP and
    the projection in float32 with autocast off (see time_embedding.py). The timestep may
    be (B,) or, per token, (B, seq_len).

    Memory: the model is built on the meta device and each tensor is read, converted and
    assigned on its own (the file is mmapped), so peak host RAM is about one tensor on a
    CUDA device, and the model's size plus one tensor on the CPU.
    """
    path = Path(path)
    info = infer_dit_info(path)
    if task is not None and info.task != task:
        if task not in TASK_WORDS:
            raise ValueError(f"task must be one of {sorted(TASK_WORDS)} or None, got {task!r}")
        what = TASK_WORDS.get(info.task) or dit_description(  # type: ignore[arg-type]
            info.dim, info.task, info.in_channels, info.out_channels
        )
        raise WanloraError(
            f"{path} is {what} (in_dim {info.in_channels}); "
            f"this recipe needs {TASK_WORDS[task]} (in_dim {TASK_IN_CHANNELS[task]})",
            f"download the {task.upper()} DiT file the recipe names",
        )
    storage_dtype = dtype if dtype is not None else info.file_dtype
    device = torch.device(device)
    # fp8 storage rounds the float32-kept time path too, so all values are fp8 values.
    round_to_fp8 = fp8_round or storage_dtype == torch.float8_e4m3fn

    model = build_on_meta(lambda: WanTransformer3DModel(**info.diffusers_config()))
    with safe_open(str(path), framework="pt", device="cpu") as file:
        file_names = list(file.keys())
        check_key_sets(
            path,
            file_names,
            model,
            to_model=wan_key_to_diffusers,
            to_file=diffusers_key_to_wan,
            extra=("a Wan DiT", "this is a different model; use the DiT file the recipe names"),
            missing="a Wan DiT",
        )
        for name in file_names:
            tensor = file.get_tensor(name)
            if device.type == "cuda":
                # Copy in the file's dtype, then convert on the GPU: rounding 14B values to
                # fp8 on the CPU takes minutes, on the GPU nothing (same bits: both RNE).
                tensor = tensor.to(device, non_blocking=False)
            if tensor.is_floating_point():
                if round_to_fp8:
                    tensor = tensor.to(torch.float8_e4m3fn)
                keep_float32 = strip_comfy_prefix(name).startswith(FLOAT32_TENSOR_PREFIXES)
                target = torch.float32 if keep_float32 else storage_dtype
                tensor = tensor.to(device=device, dtype=target)
            else:
                tensor = tensor.to(device=device)
            assign_parameter(model, wan_key_to_diffusers(name), tensor, path)  # type: ignore[arg-type]
    model.to(device)  # the RoPE tables were built on the CPU
    check_fully_loaded(model, path)
    model.condition_embedder = Float32TimeConditionEmbedder(model.condition_embedder, info.freq_dim)
    model.eval()
    return model, info
