"""`wanlora demo`: the README's first command, through the real CLI entry point."""

from __future__ import annotations

import re

from cli_run import run_cli
from make_outputs_module import load_make_outputs
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


def assert_the_tutorial_shows_this_run(r, folder) -> None:
    """docs/tutorial.md's demo output is this run's, but for timings, losses and step counts
    (this run has 1 epoch, the tutorial's 3): the log lines (stderr) and the rest (stdout)
    each in the same order."""
    make_outputs = load_make_outputs()
    text = make_outputs.DOCS[0].read_text(encoding="utf-8")
    (shown,) = [p.body for p in make_outputs.marked(text) if p.key == "wanlora demo wanlora-demo"]
    where = str(folder.resolve())
    stdout = make_outputs.relative_paths(r.stdout, where)
    stderr = make_outputs.relative_paths(r.stderr, where)
    logged = ("INFO ", "WARNING ")
    lines = shown.splitlines()
    want_log = [line for line in lines if line.startswith(logged)]
    want_out = [line for line in lines if not line.startswith(logged)]
    fix = "regenerate it with `python3 docs/make_outputs.py`"
    # the verdict's words follow the run's length (weak after 1 epoch, clear after 3): its
    # line is checked for its shape only
    verdict = re.compile(r"^(high|low): \w+-noise LoRA changes the prediction by [\d.]+% \(\w+\)")

    def same_shape(text: str) -> str:
        return "\n".join(
            verdict.match(line).group(0).split(" by ")[0] if verdict.match(line) else line
            for line in text.splitlines()
        )

    got_out = make_outputs.comparable(same_shape(stdout))
    assert make_outputs.comparable(same_shape("\n".join(want_out))) == got_out, (
        f"docs/tutorial.md's demo output is stale; {fix}:\n{stdout}"
    )
    assert make_outputs.comparable("\n".join(want_log)) == make_outputs.comparable(stderr), (
        f"docs/tutorial.md's demo log lines are stale; {fix}:\n{stderr}"
    )
