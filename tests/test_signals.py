"""SIGINT / SIGTERM during `wanlora train` (run/signals.py): the state of the step is saved,
one message says what was saved and how to resume (exit 130 / 143), and the resumed run
gives the LoRA an uninterrupted run gives, bit for bit, on the CPU."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest
import tomli_w

from cli_run import run_cli
from wanlora import faults
from wanlora.demo import create_demo_project
from wanlora.lora.file import read_lora_file
from wanlora.outputs import lora_path
from wanlora.recipes import load_project
from wanlora.run.signals import Interrupted
from wanlora.run.training import run_training
from wanlora.train.state import latest_state_dir, read_state_meta

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

IMAGES = 6  # 6 steps per expert per epoch, 2 epochs: high is steps 1-12, low 13-24


def small_demo(root: Path) -> Path:
    create_demo_project(root, epochs=2)
    for image in sorted((root / "dataset").glob("*.png"))[IMAGES:]:
        image.unlink()
        image.with_suffix(".txt").unlink(missing_ok=True)
    toml = root / "wanlora.toml"
    data = tomllib.loads(toml.read_text(encoding="utf-8"))
    data["training"].update(max_train_epochs=2, save_state_every_n_steps=1000)
    data.pop("sample", None)
    toml.write_text(tomli_w.dumps(data), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A trained copy (the uninterrupted reference) and its cache, made once."""
    root = small_demo(tmp_path_factory.mktemp("signals") / "reference")
    run_training(load_project(root), device=None)
    return root


def fresh_copy(template: Path, dest: Path) -> Path:
    """The template's project with its cache but without outputs: a run from the start."""
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("output"))
    return dest


def loras(root: Path) -> dict[str, dict]:
    project = load_project(root)
    return {e: read_lora_file(lora_path(project, e))[0] for e in project.config.experts}


@pytest.mark.parametrize(
    "rule, expert, step",
    [
        ("step:3:sigint", "high", 3),  # mid-epoch, first expert
        ("step:9:sigterm", "high", 9),  # second epoch
        ("step:14:sigint", "low", 2),  # the second expert, after the first finished
    ],
)
def test_a_signal_saves_the_step_and_the_resume_is_bit_identical(
    template, tmp_path, monkeypatch, rule, expert, step
):
    root = fresh_copy(template, tmp_path / "run")
    monkeypatch.setenv(faults.ENV, rule)
    faults.reset()
    with pytest.raises(Interrupted) as stopped:
        run_training(load_project(root))
    exc = stopped.value
    signum = signal.SIGINT if rule.endswith("sigint") else signal.SIGTERM
    assert exc.signum == signum and exc.exit_code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert (exc.expert, exc.step) == (expert, step)
    project = load_project(root)
    assert exc.state_dir == latest_state_dir(project.output_dir, expert)
    assert read_state_meta(exc.state_dir).step == step
    assert not lora_path(project, expert).exists()

    monkeypatch.delenv(faults.ENV)
    faults.reset()
    run_training(load_project(root))  # resumes
    want, got = loras(template), loras(root)
    for name in want:
        assert want[name].keys() == got[name].keys()
        assert all(want[name][k].equal(got[name][k]) for k in want[name]), name


def test_the_cli_says_what_was_saved_and_exits_143_on_sigterm(template, tmp_path):
    root = fresh_copy(template, tmp_path / "cli")
    r = run_cli("train", str(root), env={faults.ENV: "step:4:sigterm"})
    assert r.returncode == 143, r.stderr
    assert "interrupted (SIGTERM)" in r.stderr
    assert "high stopped after step 4" in r.stderr
    assert f"resume with: wanlora train {root}" in r.stderr
    r = run_cli("train", str(root))
    assert r.returncode == 0, r.stderr
