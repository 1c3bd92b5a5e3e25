"""Content keys for cache entries: a changed image, video, clip range, caption, bucket or model
file gives a new key.

Model files are identified by a fingerprint (size + sha256 of the first and last MiB), not a
full hash: hashing an 11 GB text encoder on every run would cost minutes, and a different
file of the same size with the same head and tail does not happen with real downloads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..dataset.discovery import find_images

CACHE_FORMAT = "v1"  # bump when the way entries are computed changes
_EDGE = 1 << 20


def file_fingerprint(path: Path) -> str:
    """Identity of a model file (or of a folder such as a tokenizer: every file inside)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}:".encode())
        with open(file, "rb") as f:
            digest.update(f.read(_EDGE))
            if size > 2 * _EDGE:
                f.seek(size - _EDGE)
                digest.update(f.read(_EDGE))
            elif size > _EDGE:
                digest.update(f.read())
    return digest.hexdigest()


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join((CACHE_FORMAT, *parts)).encode()).hexdigest()[:32]


def latent_key(image_bytes_sha256: str, bucket: tuple[int, int], vae_identity: str) -> str:
    """(image content, bucket, VAE file + dtype) -> the latent's cache key."""
    return _key("latent", image_bytes_sha256, f"{bucket[0]}x{bucket[1]}", vae_identity)


def clip_latent_key(
    video_sha256: str, frame_indices: tuple[int, ...], bucket: tuple[int, int], vae_identity: str
) -> str:
    """(video content, which of its frames, bucket, VAE file + dtype) -> a clip latent's key.

    The frame indices stand for the clip range after any frame-rate conversion, so a changed
    start, length, target_frames or source_fps gives a new key.
    """
    frames = ",".join(map(str, frame_indices))
    return _key("clip", video_sha256, frames, f"{bucket[0]}x{bucket[1]}", vae_identity)


def text_key(caption: str, encoder_identity: str) -> str:
    """(caption text, text encoder file + tokenizer + dtype) -> the embedding's cache key."""
    return _key("text", caption, encoder_identity)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def video_sha256(path: Path) -> str:
    """Content hash of a video file, or of a folder of frames (its images' names and bytes)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for frame in find_images(path):
        digest.update(f"{frame.name}\0{sha256_file(frame)}\n".encode())
    return digest.hexdigest()
