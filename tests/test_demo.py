"""`wanlora demo`: the README's first command, through the real CLI entry point."""

from __future__ import annotations

from cli_run import run_cli
from demo_output import assert_the_tutorial_shows_this_run
from wanlora.dataset.lint import check_dataset
from wanlora.demo import create_demo_project
from wanlora.lora.file import read_lora_file


def test_demo_dataset_is_clean_for_check(tmp_path):
    project = create_demo_project(tmp_path / "demo")
    report = check_dataset(project)
    assert len(report.images) == 18
    assert report.errors == [] and report.warnings == []


def test_demo_runs_end_to_end_and_describes_the_loras(tmp_path):
    root = tmp_path / "wanlora-demo"
    r = run_cli("demo", str(root), "--epochs", "1")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # rich wraps long lines
    assert "Your two LoRAs" in out and "20 LoRA modules (rank 16, float16)" in out
    # one command per line, each copyable as is ("A | B" would read as a shell pipe)
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert f"wanlora check {root}" in lines and f"wanlora train {root} --new-run" in lines
    for name in ("WAN2.2-HighNoise_Demo_v1_by-wanlora", "WAN2.2-LowNoise_Demo_v1_by-wanlora"):
        tensors, meta = read_lora_file(root / "output" / f"{name}.safetensors")
        assert meta["modelspec.title"] == name and len(tensors) == 60
    assert_the_tutorial_shows_this_run(r, tmp_path)
    # the folder is a normal project afterwards
    r = run_cli("train", str(root), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "already trained" in r.stdout

