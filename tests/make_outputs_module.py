"""docs/make_outputs.py (a script, not a package) as a module, for the docs' tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_outputs.py"


def load_make_outputs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
