"""Reading model files safely: safetensors headers, .pth state dicts, and what a file is.

Every check here exists to turn a confusing library traceback (a truncated download, a
.pth renamed to .safetensors, the VAE picked where the DiT belongs) into a WanloraError
that names the file and says what it really is.

Which model a file holds is read off its tensor names and a few shapes (no weights read):
a DiT's task from its input/output channels (16/16 text-to-video, 36/16 Wan 2.2
image-to-video, 48/48 Wan 2.2 TI2V-5B), a VAE's generation from its latent channels
(16: Wan 2.1, 48: Wan 2.2).
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from wanlora.errors import WanloraError

# The ComfyUI repackaged DiT files may carry this prefix on every key.
COMFY_PREFIX = "model.diffusion_model."

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

# A safetensors header is JSON; anything claiming more than this is not one.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def _require_file(path: Path) -> None:
    if not path.exists():
        raise WanloraError(
            f"Model file {path} does not exist",
            "run `wanlora download` or fix the path in wanlora.toml",
        )
    if not path.is_file():
        raise WanloraError(f"Model path {path} is a folder, not a file", "point it at the file")


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _starts_like_safetensors(path: Path) -> bool:
    """8-byte little-endian header length, then the JSON header's opening brace."""
    with open(path, "rb") as f:
        start = f.read(9)
    if len(start) < 9:
        return False
    (header_len,) = struct.unpack("<Q", start[:8])
    return start[8:9] == b"{" and header_len <= _MAX_HEADER_BYTES


def looks_like_torch_pickle(path: Path) -> bool:
    """torch.save writes a zip archive (PK..) or, in old versions, a raw pickle (0x80 proto)."""
    if _starts_like_safetensors(path):
        return False
    magic = _magic(path)
    return magic.startswith(b"PK\x03\x04") or (
        magic[:1] == b"\x80" and magic[1:2] in b"\x02\x03\x04\x05"
    )


def read_safetensors_header(path: str | Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from a .safetensors header, after checking the file is whole.

    Raises WanloraError for a pickle/.pth file, a file that is not safetensors, or a file
    shorter than its header says (an interrupted download).
    """
    path = Path(path)
    _require_file(path)
    size = path.stat().st_size
    if looks_like_torch_pickle(path):
        raise WanloraError(
            f"{path} is a PyTorch pickle/.pth file, not a .safetensors file",
            "use the .safetensors file the recipe names (see `wanlora download`)",
        )
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise WanloraError(f"{path} is empty or truncated ({size} bytes)", _redownload(path))
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _MAX_HEADER_BYTES:
            raise WanloraError(f"{path} is not a .safetensors file", _redownload(path))
        if 8 + header_len > size:
            raise WanloraError(f"{path} is truncated (header cut off)", _redownload(path))
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise WanloraError(f"{path} is not a .safetensors file", _redownload(path)) from None
    if not isinstance(header, dict):
        raise WanloraError(f"{path} is not a .safetensors file", _redownload(path))

    tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            data_end = max(data_end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise WanloraError(
                f"{path} has an unreadable or unsupported tensor entry {name!r}",
                _redownload(path),
            ) from None
        tensors[name] = (dtype, shape)
    expected_size = 8 + header_len + data_end
    if size < expected_size:
        raise WanloraError(
            f"{path} is truncated: {size:,} bytes on disk, the header needs {expected_size:,}",
            _redownload(path),
        )
    return tensors


def loaded_bytes(path: str | Path, dtype: torch.dtype) -> int:
    """Bytes a model file's tensors take once loaded with floating tensors cast to `dtype`,
    read from its index, no weights: a safetensors header, or a zip-format .pth memory-mapped
    (its storages are never touched). An old raw-pickle .pth counts as its file size."""
    path = Path(path)
    if looks_like_torch_pickle(path):
        if not zipfile.is_zipfile(path):
            return path.stat().st_size
        shapes = [(t.dtype, tuple(t.shape)) for t in load_torch_state_dict(path).values()]
    else:
        shapes = list(read_safetensors_header(path).values())
    element = torch.empty((), dtype=dtype).element_size()
    total = 0
    for tensor_dtype, shape in shapes:
        n = 1
        for side in shape:
            n *= side
        total += n * (element if tensor_dtype.is_floating_point else tensor_dtype.itemsize)
    return total


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The free-form `__metadata__` of a .safetensors file (empty if none)."""
    path = Path(path)
    read_safetensors_header(path)  # validates
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    return dict(header.get("__metadata__") or {})


def load_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict saved with torch.save, memory-mapped (tensors stay on disk until used)."""
    path = Path(path)
    _require_file(path)
    if not looks_like_torch_pickle(path):
        try:
            read_safetensors_header(path)
        except WanloraError:
            pass
        else:
            raise WanloraError(
                f"{path} is a .safetensors file, but a PyTorch .pth state dict is expected here",
                "use the original .pth file the recipe names (models_t5_umt5-xxl-enc-bf16.pth)",
            )
        raise WanloraError(f"{path} is not a PyTorch .pth file", _redownload(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # mmap needs the zip format; an old raw pickle loads without it.
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WanloraError(
                f"{path} could not be read as a PyTorch file (truncated download?): {exc}",
                _redownload(path),
            ) from None
    except Exception as exc:
        raise WanloraError(
            f"{path} could not be read as a PyTorch file (truncated download?): {exc}",
            _redownload(path),
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WanloraError(f"{path} is not a plain state dict of tensors", _redownload(path))
    return state


def strip_comfy_prefix(name: str) -> str:
    return name[len(COMFY_PREFIX) :] if name.startswith(COMFY_PREFIX) else name


def identify_keys(names: set[str]) -> str:
    """'dit', 'vae', 'text_encoder' or 'unknown' from a file's tensor names."""
    if {"patch_embedding.weight", "blocks.0.self_attn.q.weight"} <= names:
        return "dit"
    if {"encoder.conv1.weight", "decoder.conv1.weight", "conv1.weight"} <= names:
        return "vae"
    if {"token_embedding.weight", "blocks.0.attn.q.weight"} <= names:
        return "text_encoder"
    return "unknown"


KIND_WORDS = {
    "dit": "a Wan DiT (diffusion model)",
    "vae": "the Wan VAE",
    "text_encoder": "the umT5 text encoder",
    "unknown": "not a model file this tool recognises",
}


def identify_model_file(path: str | Path) -> str:
    """What a model file is, from its tensor names: "dit", "vae", "text_encoder" or "unknown".

    Knows the layouts this tool loads (original Wan DiT / Wan VAE / Wan umT5 .pth).
    Unreadable files raise WanloraError; readable files in other layouts are "unknown".
    `identify_model` also tells which DiT or VAE it is.
    """
    return identify_model(path).kind


# A Wan DiT's (input, output) latent channels -> its task.
DIT_TASKS = {(16, 16): "t2v", (36, 16): "i2v", (48, 48): "ti2v"}
# Input channels a task's DiT takes: 16 noisy latent channels (t2v); plus 4 mask and 16
# image-latent channels (i2v, Wan 2.2 I2V-A14B); 48 Wan 2.2 VAE channels (ti2v).
TASK_IN_CHANNELS = {task: channels[0] for channels, task in DIT_TASKS.items()}
TASK_WORDS = {
    "t2v": "a text-to-video (T2V) DiT",
    "i2v": "an image-to-video (I2V) DiT",
    "ti2v": "a Wan 2.2 TI2V-5B DiT",
}
# A Wan VAE's latent channels -> which VAE it is.
VAE_KINDS = {16: "wan2.1", 48: "wan2.2"}
VAE_WORDS = {
    "wan2.1": "the Wan 2.1 VAE (16 latent channels, used by every 14B model)",
    "wan2.2": "the Wan 2.2 VAE (48 latent channels, used by TI2V-5B only)",
}


def dit_description(dim: int, task: str | None, in_channels: int, out_channels: int) -> str:
    """A human name for a Wan-layout DiT of this width and task."""
    names = {
        (5120, "t2v"): "a Wan 2.1/2.2 T2V 14B DiT",
        (1536, "t2v"): "a Wan 2.1 T2V 1.3B DiT",
        (5120, "i2v"): "a Wan 2.2 I2V-A14B expert DiT",
        (3072, "ti2v"): "a Wan 2.2 TI2V-5B DiT",
    }
    if (dim, task) in names:
        return names[(dim, task)]
    if task is not None:
        return f"{TASK_WORDS[task]} (Wan layout, dim {dim})"
    return f"a Wan-layout DiT with {in_channels} input and {out_channels} output channels"


@dataclass(frozen=True)
class ModelIdentity:
    """What a model file holds.

    kind: "dit" | "vae" | "text_encoder" | "unknown".
    variant: a DiT's task ("t2v" | "i2v" | "ti2v"), a VAE's generation ("wan2.1" |
        "wan2.2"), or None (a DiT or VAE this tool does not load, or another kind).
    description: a human name for messages ("a Wan 2.2 I2V-A14B expert DiT").
    """

    kind: str
    variant: str | None
    description: str


def identify_shapes(shapes: dict[str, tuple[int, ...]]) -> ModelIdentity:
    """The identity of a model from tensor name -> shape (ComfyUI prefix allowed)."""
    shapes = {strip_comfy_prefix(n): s for n, s in shapes.items()}
    kind = identify_keys(set(shapes))
    if kind == "dit":
        return _identify_dit(shapes)
    if kind == "vae":
        if "conv2.weight" not in shapes:
            return ModelIdentity("vae", None, "an incomplete Wan-layout VAE (no conv2)")
        z_dim = shapes["conv2.weight"][0]
        variant = VAE_KINDS.get(z_dim)
        words = VAE_WORDS[variant] if variant else f"a Wan-layout VAE with {z_dim} latent channels"
        return ModelIdentity("vae", variant, words)
    return ModelIdentity(kind, None, KIND_WORDS[kind])


def _identify_dit(shapes: dict[str, tuple[int, ...]]) -> ModelIdentity:
    dim, in_channels = shapes["patch_embedding.weight"][:2]
    patch = shapes["patch_embedding.weight"][2:]
    if any(n.startswith("img_emb.") for n in shapes):
        return ModelIdentity(
            "dit", None, "a Wan 2.1 image-to-video DiT with a CLIP image-encoder input"
        )
    head = shapes.get("head.head.weight")
    patch_volume = patch[0] * patch[1] * patch[2] if len(patch) == 3 else 0
    out_channels = head[0] // patch_volume if head and patch_volume else 0
    task = DIT_TASKS.get((in_channels, out_channels))
    return ModelIdentity("dit", task, dit_description(dim, task, in_channels, out_channels))


def identify_model(path: str | Path) -> ModelIdentity:
    """What a model file is, and which DiT (task) or VAE (generation) it is; header only."""
    path = Path(path)
    _require_file(path)
    if looks_like_torch_pickle(path):
        shapes = {n: tuple(t.shape) for n, t in load_torch_state_dict(path).items()}
    else:
        shapes = {n: shape for n, (_, shape) in read_safetensors_header(path).items()}
    return identify_shapes(shapes)


def require_kind(path: Path, names: set[str], expected: str) -> None:
    """Raise a WanloraError naming what the file is when it is not the expected kind."""
    kind = identify_keys({strip_comfy_prefix(n) for n in names})
    if kind != expected:
        raise WanloraError(
            f"{path} is {KIND_WORDS[kind]}, but {KIND_WORDS[expected]} is expected here",
            "check which file each model path in wanlora.toml points to",
        )


def _redownload(path: Path) -> str:
    return f"delete {path.name} and run `wanlora download` again"
