"""benchmarks/bench_recipe.py on the CPU with tiny models: `wanlora cache` + `wanlora train`
run as subprocesses into both LoRA files, and every phase of both experts comes back."""

from __future__ import annotations

import json

import pytest

from benchmarks_module import load_benchmark
from wanlora.outputs import OutputLayout
from wanlora.recipes import load_project


def test_recipe_bench_runs_the_commands_and_times_each_phase(tmp_path):
    bench = load_benchmark("bench_recipe.py")
    root, out = tmp_path / "recipe", tmp_path / "out"
    args = ["--tiny", "--device", "cpu", "--dir", str(root), "--out", str(out)]
    assert bench.main([*args, "--epochs", "1", "--images", "1", "--sample-steps", "1"]) == 0
    result = json.loads((out / "recipe.json").read_text())
    assert (root / "models" / "wan2.2_t2v_low_same_file.safetensors").is_symlink()
    layout = OutputLayout.of(load_project(root))
    assert layout.lora("high").is_file() and layout.lora("low").is_file()
    commands_s = result["cache_command_s"] + result["train_command_s"]
    assert result["total_s"] == pytest.approx(commands_s, abs=0.11)  # each rounded to 0.1 s
    for expert in ("high", "low"):
        phases = result["experts"][expert]
        assert phases["steps"] == 1 and len(phases["samples_s"]) == 1
        assert phases["load_s"] >= 0 and phases["plan_lines"]
    assert result["projected_recipe_min"] is None  # one step: no warm steps to project from
