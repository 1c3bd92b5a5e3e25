"""Atomic file writes: nothing a user made is left half-written or silently replaced.

Files are created with the user's umask (0666 & ~umask, e.g. 0644), like any program's
output: a LoRA, sample or report must be readable by a ComfyUI running as another user.
(tempfile.mkstemp would make every output 0600.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from . import faults
from .errors import WanloraError

# errnos that mean "the disk (or the quota, or the file-size limit) is full"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXTS = ("os error 28", "os error 122", "os error 27", "no space left", "quota exceeded")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it is fsynced and renamed over it.

    On any exception the temporary file is removed and `target` is untouched; a full disk
    becomes a WanloraError naming the folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = create_temp_file(target.parent, prefix=f".{target.name}.", suffix=".tmp")
    created = os.fstat(fd)
    os.close(fd)
    try:
        yield tmp_path
        if tmp_path.stat().st_ino != created.st_ino:
            # the writer replaced our file with its own (safetensors writes a 0600 temporary
            # and renames it): give it back the mode the user's umask gave ours
            os.chmod(tmp_path, stat.S_IMODE(created.st_mode))
        faults.point("atomic_write", target)  # test hook (faults.py): inert unless asked
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if is_disk_full(exc):
            raise disk_full_error(target.parent) from None
        raise


def create_temp_file(directory: str | os.PathLike, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file with a unique name in `directory`, open for writing: (fd, path).

    Like tempfile.mkstemp (exclusive creation, never an existing file) but with the mode the
    user's umask gives, so that renaming it into place publishes a normally readable file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        path = Path(directory) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue


def is_disk_full(exc: BaseException) -> bool:
    """Whether a write failed for lack of space (OSError anywhere in the chain, or the text
    of a library that wraps it, e.g. safetensors' "os error 28")."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        text = str(exc).lower()
        if any(t in text for t in _FULL_TEXTS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def disk_full_error(folder: str | os.PathLike, needed_bytes: int | None = None) -> WanloraError:
    """ "no space left on <folder>: free N GB and run again" (N: what the write needs, >= 1)."""
    folder = Path(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    need_gb = max(1, -(-int(needed_bytes or 0) // 10**9))
    return WanloraError(
        f"no space left on {folder} ({free / 1e9:.1f} GB free): free {need_gb} GB and run again",
        "the files written before are intact; `wanlora train` resumes from the last saved state",
    )


def atomic_write_text(target: str | os.PathLike, text: str, *, executable: bool = False) -> None:
    """Write `text` (UTF-8) to `target` atomically; `executable` adds x where r is (0644 -> 0755)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
        if executable:
            mode = tmp.stat().st_mode & 0o777
            tmp.chmod(mode | (mode & 0o444) >> 2)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
