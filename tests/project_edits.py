"""Edits of a test project's wanlora.toml, as a user would make them by hand."""

from __future__ import annotations

import re
from pathlib import Path


def set_training(root: Path, key: str, value: int) -> None:
    """Set `[training] key = value` in the project's wanlora.toml (replaced where set)."""
    config = root / "wanlora.toml"
    body = config.read_text(encoding="utf-8")
    if re.search(rf"^{key} = .*$", body, flags=re.M):
        body = re.sub(rf"^{key} = .*$", f"{key} = {value}", body, flags=re.M)
    else:
        body = body.replace("[training]\n", f"[training]\n{key} = {value}\n", 1)
    config.write_text(body, encoding="utf-8")
