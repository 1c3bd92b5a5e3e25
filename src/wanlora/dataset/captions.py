"""Reading a caption file as the reference trainer does: UTF-8, surrounding whitespace stripped."""

from __future__ import annotations

from pathlib import Path

from ..errors import WanloraError


def read_caption(path: str | Path) -> str:
    """The caption text of `path`; raise WanloraError if it is missing or not UTF-8 text."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WanloraError(
            f"{path}: caption file missing", f"write a caption into {path.name} next to its image"
        ) from None
    except IsADirectoryError:
        raise WanloraError(
            f"{path}: is a folder, not a caption file", "rename or move it"
        ) from None
    except OSError as exc:
        raise WanloraError(
            f"{path}: cannot read caption ({exc.strerror or exc})", "check the file or link"
        ) from None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise WanloraError(
            f"{path}: caption is not UTF-8 text ({_guess_encoding(data)}; bad byte at {exc.start})",
            "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None


def _guess_encoding(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "looks like UTF-16"
    if b"\x00" in data[:4096]:
        return "contains NUL bytes: binary or UTF-16"
    return "looks like Latin-1/Windows-1252"
