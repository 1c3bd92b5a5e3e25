"""The verdict after a real tiny training run (`wanlora train` on the demo's models, CPU): a
run that shows every cause the verdict knows (few steps, the lr decayed early, an expert
trained outside its range, samples at strength 0) names each one, with its numbers, in
output/verdict.json, in what `wanlora train` prints and at the top of the report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from markupsafe import escape
from PIL import Image
from typer.testing import CliRunner

from test_report import chromium, run_chromium
from wanlora.cli import app
from wanlora.demo import create_demo_project
from wanlora.outputs import OutputLayout
from wanlora.recipes import load_project
from wanlora.report import build_report
from wanlora.run.validation import write_verdict

KEEP = 3  # images of the demo's 18: 3 steps, seconds on a CPU
SAMPLE = "every_n_epochs = 1\nstrengths = [0.0]\nsteps = 2\nwidth = 32\nheight = 32\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict-run") / "demo"
    project = create_demo_project(root, epochs=1)
    for image in sorted(project.dataset_dir.glob("*.png"))[KEEP:]:
        image.unlink()
        image.with_suffix(".txt").unlink()
    text = project.config_file.read_text(encoding="utf-8")
    text = re.sub(r"steps = 4\nwidth = 64\nheight = 64\n", "", text)
    text = text.replace("[sample]\n", "[sample]\n" + SAMPLE)
    # the high expert trained over low-noise timesteps too: outside where it runs (875-1000)
    text = text.replace("[experts.high]\n", "[experts.high]\nmin_timestep = 500\n")
    project.config_file.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(root), "--expert", "high", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return load_project(root), " ".join(result.output.split())  # rich wraps long lines


def test_every_cause_the_run_shows_is_named_with_its_numbers(trained):
    project, printed = trained
    layout = OutputLayout.of(project)
    verdict = json.loads(layout.verdict.read_text(encoding="utf-8"))["experts"]
    assert list(verdict) == ["high"]  # the low expert did not train: no verdict for it
    high = verdict["high"]
    assert high["level"] in ("none", "weak"), high  # 3 steps barely move it
    assert high["causes"] == [
        f"only {KEEP} optimiser steps (try more [training] max_train_epochs)",
        "the learning rate is below 10% of 0.0003 from step 1 of 3 on (polynomial, power 8): "
        "the last 67% of the steps barely move the LoRA (try a lower [scheduler] "
        "lr_scheduler_power or a higher [optimizer] learning_rate)",
        "it trained at timesteps 500-1000 but runs at 875-1000 in inference with boundary "
        "0.875 (try min_timestep = 875 and max_timestep = 1000 in [experts.high])",
        "[sample] strengths are all 0 (strengths = [0]): the samples during training show the "
        "base model, not the LoRA (try strengths = [1.0] in [sample])",
    ]
    assert high["text"] == high["summary"] + " Why: " + "; ".join(high["causes"]) + "."
    assert high["summary"].startswith("high-noise LoRA changes the prediction by ")
    assert f"after {KEEP} steps)" in high["summary"]
    # `wanlora train` prints the whole verdict, causes included
    assert "Is the LoRA working? high: " + high["text"] + " (validation took" in printed


def test_samples_at_strength_0_are_the_base_models(trained):
    """What the strength cause says, seen: the epoch's sample at 0 is the base row's."""
    project, _ = trained
    layout = OutputLayout.of(project)
    at_zero = layout.sample_file(layout.training_sample_stem("high", 1, 0, 42, 0.0), ".png")
    base = layout.sample_file(layout.training_base_stem(0, 42), ".png")
    assert np.array_equal(np.asarray(Image.open(at_zero)), np.asarray(Image.open(base)))


def test_the_causes_follow_the_settings(trained, tmp_path):
    """The same logs with other settings: a cause the settings no longer show is gone."""
    project, _ = trained
    layout = OutputLayout.of(project)
    saved = layout.verdict.read_bytes(), project.config_file.read_text(encoding="utf-8")
    try:
        text = saved[1].replace("strengths = [0.0]", "strengths = [0.0, 1.0]")
        project.config_file.write_text(text, encoding="utf-8")
        causes = write_verdict(load_project(project.root))["experts"]["high"]["causes"]
        assert len(causes) == 3 and not any("strengths" in c for c in causes)
        text = saved[1].replace("[sample]\nevery_n_epochs = 1\n", "[sample]\n")  # no samples
        assert text != saved[1]
        project.config_file.write_text(text, encoding="utf-8")
        causes = write_verdict(load_project(project.root))["experts"]["high"]["causes"]
        assert not any("strengths" in c for c in causes)
        text = saved[1].replace("min_timestep = 500\n", "")
        project.config_file.write_text(text, encoding="utf-8")
        causes = write_verdict(load_project(project.root))["experts"]["high"]["causes"]
        assert not any("trained at timesteps" in c for c in causes) and len(causes) == 3
    finally:
        layout.verdict.write_bytes(saved[0])
        project.config_file.write_text(saved[1], encoding="utf-8")


def test_the_report_shows_the_verdict_and_its_causes_first(trained, tmp_path):
    project, _ = trained
    high = json.loads(OutputLayout.of(project).verdict.read_text(encoding="utf-8"))["experts"]
    high = high["high"]
    page = build_report(project, tmp_path / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="verdict">') : page.index('<section id="recipe">')]
    assert page.index("<section") == page.index('<section id="verdict">')  # the first one
    assert "<td>high expert</td>" in section and str(escape(high["summary"])) in section
    assert section.count("<li>") == 4  # one item per cause
    assert "[sample] strengths are all 0 (strengths = [0])" in section
    assert "it trained at timesteps 500-1000 but runs at 875-1000" in section
    assert 'alt="validation loss and LoRA effect"' in page  # beside the training loss
    if chromium() is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    dom = run_chromium(["--dump-dom", (tmp_path / "report.html").as_uri()], tmp_path / "profile")
    sections = re.findall(r'<section id="(\w+)"', dom.stdout)
    assert sections[0] == "verdict", dom.stderr[-2000:]
    assert "strengths are all 0 (strengths = [0])" in dom.stdout
