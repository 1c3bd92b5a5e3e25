"""Outputs are written with the user's umask (0666 & ~umask), not tempfile's private 0600:
a ComfyUI running as another user must be able to read the LoRAs, samples and report."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
import torch
from PIL import Image

from wanlora.export.musubi import write_musubi_export
from wanlora.fsutil import atomic_write_bytes, atomic_write_text
from wanlora.lora.file import save_lora_file
from wanlora.project_init import init_project
from wanlora.sampling.sample import save_png


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, mask, expected):
    with umask(mask):
        atomic_write_text(tmp_path / "report.html", "<html></html>")
        atomic_write_bytes(tmp_path / "data.bin", b"x")
        lora = tmp_path / "WAN2.2-HighNoise_N_by-me.safetensors"
        save_lora_file(lora, {"w.lora_down.weight": torch.zeros(2, 2)}, {})
        sample = save_png(Image.new("RGB", (8, 8)), tmp_path / "samples", "s", {"seed": 1})
        atomic_write_text(tmp_path / "report.html", "<html>again</html>")  # replacing one too
    for path in (tmp_path / "report.html", tmp_path / "data.bin", lora, sample):
        assert mode(path) == expected, path
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".tmp-*"))


def test_a_script_is_executable_where_it_is_readable(tmp_path):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    with umask(0o022):
        folder = write_musubi_export(project)
    assert mode(folder / "run.sh") == 0o755 and mode(folder / "dataset.toml") == 0o644
    with umask(0o027):
        atomic_write_text(tmp_path / "run.sh", "#!/bin/sh\n", executable=True)
    assert mode(tmp_path / "run.sh") == 0o750
