"""Content keys for cache entries: a changed image, caption, bucket or model file gives a new key.

Model files are identified by a fingerprint (size + sha256 of the first and last MiB), not a
full hash: hashing an 11 GB text encoder on every run would cost minutes, and a different
file of the same size with the same head and tail does not happen with real downloads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

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


def text_key(caption: str, encoder_identity: str) -> str:
    """(caption text, text encoder file + tokenizer + dtype) -> the embedding's cache key."""
    return _key("text", caption, encoder_identity)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
