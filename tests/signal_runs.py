"""The tiny project the signal tests share, and one interrupted-then-resumed run.

4 demo images, gradient accumulation 2, 2 epochs: per expert 8 micro-batches, 4 optimiser
steps (2 per epoch), a periodic state at step 3; high then low. One torch thread, as each
worker process on a 2-core box, so every configuration computes the same bits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import tomli_w
import torch

from wanlora import faults
from wanlora.demo import DEMO_TRIGGER, create_demo_project
from wanlora.lora.file import read_lora_file
from wanlora.outputs import lora_path
from wanlora.recipes import load_project
from wanlora.run.training import run_training

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

IMAGES = 4
STEPS = 4  # per expert
CPU = torch.device("cpu")


def tiny_project(root: Path) -> Path:
    create_demo_project(root, epochs=2)
    for image in sorted((root / "dataset").glob("*.png"))[IMAGES:]:
        image.unlink()
        image.with_suffix(".txt").unlink(missing_ok=True)
    set_toml(
        root,
        training=dict(max_train_epochs=2, save_state_every_n_steps=3, gradient_accumulation_steps=2),
        # [sample] does not change what is trained; tests that pass a TrainingMonitor sample
        sample=dict(prompts=[f"{DEMO_TRIGGER}, a red circle"], steps=1, width=32, height=32,
                    every_n_epochs=1),  # fmt: skip
    )
    return root


def reference_project(root: Path) -> Path:
    """The uninterrupted run every interrupted one is compared with (both experts), and
    the cache every copy reuses."""
    tiny_project(root)
    with one_torch_thread():
        run_training(load_project(root), device=CPU)
    return root


@contextlib.contextmanager
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def set_toml(root: Path, **tables) -> None:
    toml = root / "wanlora.toml"
    data = tomllib.loads(toml.read_text(encoding="utf-8"))
    for table, values in tables.items():
        data.setdefault(table, {}).update(values)
    toml.write_text(tomli_w.dumps(data), encoding="utf-8")


def fresh_copy(template: Path, dest: Path, *, cache: bool = True) -> Path:
    """The template's project without outputs (and without its cache unless `cache`)."""
    skip = ["output"] + ([] if cache else ["cache"])
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns(*skip))
    return dest


def loras(root: Path, experts) -> dict[str, dict[str, torch.Tensor]]:
    project = load_project(root)
    return {e: read_lora_file(lora_path(project, e))[0] for e in experts}


def assert_same_loras(want: dict, got: dict) -> None:
    """Bit for bit: every tensor of every LoRA file."""
    for name in got:
        assert want[name].keys() == got[name].keys(), name
        differ = [k for k in want[name] if not want[name][k].equal(got[name][k])]
        assert not differ, f"{name}: {len(differ)} of {len(want[name])} tensors differ"


class FaultRule:
    """WANLORA_FAULT_AT set for the body (this process and the workers it spawns)."""

    def __init__(self, rule: str | None):
        self.rule = rule

    def __enter__(self):
        if self.rule:
            os.environ[faults.ENV] = self.rule
        faults.reset()

    def __exit__(self, *exc):
        os.environ.pop(faults.ENV, None)
        faults.reset()
