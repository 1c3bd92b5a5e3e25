"""benchmarks/bench_recipe.py on the CPU with tiny models: `wanlora cache` + `wanlora train`
run as subprocesses into both LoRA files, and every phase of both experts comes back; a run
cut by SIGTERM keeps the phases it finished."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks_module import BENCHMARKS, load_benchmark
from wanlora.outputs import OutputLayout
from wanlora.recipes import load_project


def test_recipe_bench_runs_the_commands_and_times_each_phase(tmp_path, capsys):
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
    assert result["status"] == "complete"
    printed = capsys.readouterr().out
    for phase in ("cache_command_s", "experts: high: 1 steps", "experts: low: 1 steps",
                  "train_command_s", "status: complete"):  # fmt: skip
        assert f"phase {phase}" in printed


def test_a_cut_run_keeps_the_phases_it_finished(tmp_path):
    """An outer timeout's SIGTERM during `wanlora train`: the bench stops the command, and
    recipe.json (written after each phase) says it was cut and has the cache phase."""
    root, out = tmp_path / "recipe", tmp_path / "out"
    args = ["--tiny", "--device", "cpu", "--dir", str(root), "--out", str(out)]
    args += ["--epochs", "1", "--images", "1", "--sample-steps", "1"]
    bench = subprocess.Popen(
        [sys.executable, "-u", str(BENCHMARKS / "bench_recipe.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = []
    for line in bench.stdout:
        printed.append(line)
        if line.startswith("phase cache_command_s:"):
            train_log = out / "train.log"  # the train command's first line: it is running
            while not (train_log.is_file() and train_log.stat().st_size) and bench.poll() is None:
                time.sleep(0.2)
            bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=120) == 143, "".join(printed)
    result = json.loads((out / "recipe.json").read_text())
    assert result["status"] == "cut (SIGTERM)" and result["cache_command_s"] > 0
    assert "train_command_s" not in result and (out / "train.log").is_file()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _runs_in(p, root)]


def _runs_in(cmdline: Path, root: Path) -> bool:
    """Whether the process (one this test started, by its unique folder) is still there."""
    try:
        return str(root) in cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False
