"""Model files: the registry of downloads, and loaders for the files users actually have.

Importing this package is light: the loaders (which import torch, diffusers and
transformers) are imported on first use, so `wanlora.models.registry` works without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "load_dit": "wanlora.models.dit",
    "DitInfo": "wanlora.models.dit",
    "load_vae": "wanlora.models.vae",
    "encode_latents": "wanlora.models.vae",
    "encode_video_latents": "wanlora.models.vae",
    "decode_video": "wanlora.models.vae",
    "infer_vae_info": "wanlora.models.vae",
    "vae_kind": "wanlora.models.vae",
    "VaeInfo": "wanlora.models.vae",
    "ti2v_token_timesteps": "wanlora.models.time_embedding",
    "load_text_encoder": "wanlora.models.text_encoder",
    "load_tokenizer": "wanlora.models.text_encoder",
    "TextEncoder": "wanlora.models.text_encoder",
    "identify_model_file": "wanlora.models.files",
    "identify_model": "wanlora.models.files",
    "ModelIdentity": "wanlora.models.files",
    "write_tiny_models": "wanlora.models.tiny",
    "write_tiny_wan22_models": "wanlora.models.tiny",
    "TinyModelPaths": "wanlora.models.tiny",
    "TinyWan22Paths": "wanlora.models.tiny",
}

__all__ = [
    "DitInfo",
    "ModelIdentity",
    "TextEncoder",
    "TinyModelPaths",
    "TinyWan22Paths",
    "VaeInfo",
    "decode_video",
    "encode_latents",
    "encode_video_latents",
    "identify_model",
    "identify_model_file",
    "infer_vae_info",
    "load_dit",
    "load_text_encoder",
    "load_tokenizer",
    "load_vae",
    "ti2v_token_timesteps",
    "vae_kind",
    "write_tiny_models",
    "write_tiny_wan22_models",
]

if TYPE_CHECKING:
    from wanlora.models.dit import DitInfo, load_dit
    from wanlora.models.files import ModelIdentity, identify_model, identify_model_file
    from wanlora.models.text_encoder import TextEncoder, load_text_encoder, load_tokenizer
    from wanlora.models.time_embedding import ti2v_token_timesteps
    from wanlora.models.tiny import (
        TinyModelPaths,
        TinyWan22Paths,
        write_tiny_models,
        write_tiny_wan22_models,
    )
    from wanlora.models.vae import (
        VaeInfo,
        decode_video,
        encode_latents,
        encode_video_latents,
        infer_vae_info,
        load_vae,
        vae_kind,
    )


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wanlora.models' has no attribute {name!r}")
