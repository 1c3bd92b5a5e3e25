"""The TI2V-5B recipe around training: the preset, `init`, `inspect`, the 32-pixel sizes,
`export musubi`'s refusal, and `wanlora demo --recipe wan22-ti2v-5b` through the real CLI."""

from __future__ import annotations

import json

import pytest
from markupsafe import escape

from cli_run import run_cli
from demo_output import TI2V_DEMO, assert_the_tutorial_shows_this_run
from wanlora.dataset.items import load_items
from wanlora.dataset.lint import check_dataset
from wanlora.demo_ti2v import create_ti2v_demo_project
from wanlora.errors import WanloraError
from wanlora.export.musubi import musubi_export
from wanlora.lora.file import read_lora_file
from wanlora.models.registry import MODEL_FILES
from wanlora.project_init import init_project
from wanlora.recipes import load_project, load_recipe, merge_config, recipe_names
from wanlora.report import build_report


def test_the_preset_is_one_model_with_the_wan22_vae_and_says_it_is_carried_over():
    assert "wan22-ti2v-5b" in recipe_names()
    config = load_recipe("wan22-ti2v-5b")
    t2v = load_recipe("wan22-t2v")
    assert config.task == "ti2v-5B" and config.boundary is None
    assert list(config.experts) == ["main"]
    main = config.experts["main"]
    assert (main.min_timestep, main.max_timestep) == (0, 1000)
    assert MODEL_FILES[main.dit].files[0].endswith("wan2.2_ti2v_5B_fp16.safetensors")
    assert MODEL_FILES[config.models.vae].files[0].endswith("wan2.2_vae.safetensors")
    assert (config.dit_task, config.vae_kind, config.size_step) == ("ti2v", "wan2.2", 32)
    # the community recipe's hyperparameters, carried over unchanged
    for table in ("lora", "optimizer", "scheduler", "timesteps"):
        assert getattr(config, table) == getattr(t2v, table), table
    assert config.training.max_train_epochs == t2v.training.max_train_epochs
    assert "carried over (not tuned)" in config.description
    assert (config.sample.shift, config.sample.guidance_scale) == (5.0, 5.0)


def test_inspect_recipe_and_timesteps_say_what_the_5b_recipe_is():
    r = run_cli("inspect", "recipe", "wan22-ti2v-5b")
    assert r.returncode == 0, r.stderr
    assert "T2V A14B community recipe's hyperparameters carried over (not tuned)" in r.stdout
    assert 'task = "ti2v-5B"' in r.stdout and "[experts.main]" in r.stdout
    r = run_cli("inspect", "timesteps", "--recipe", "wan22-ti2v-5b", "-n", "1000", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["expert"] == "main" and summary["ti2v_i2v_share"] == 0.5


def test_sizes_must_be_multiples_of_32():
    base = {"recipe": "wan22-ti2v-5b"}
    with pytest.raises(WanloraError, match="multiples of 32"):
        merge_config({**base, "dataset": {"resolution": [960, 944]}})
    with pytest.raises(WanloraError, match="multiples of 32"):
        merge_config({**base, "sample": {"width": 720}})
    merge_config({"recipe": "wan22-t2v", "dataset": {"resolution": [960, 944]}})  # 16 is fine


def test_init_then_export_musubi_says_there_is_no_5b_task(tmp_path):
    project = init_project(tmp_path / "p", "wan22-ti2v-5b", "Five", "me")
    assert project.config.task == "ti2v-5B"
    with pytest.raises(WanloraError, match="musubi-tuner has no 5B task") as info:
        musubi_export(project)
    assert "\n" not in str(info.value) and "wanlora train" in str(info.value)
    r = run_cli("export", "musubi", str(project.root))
    assert r.returncode != 0 and "musubi-tuner has no 5B task" in r.stderr + r.stdout
    assert not (project.root / "export").exists()


def test_demo_dataset_is_clean_and_buckets_on_32(tmp_path):
    project = create_ti2v_demo_project(tmp_path / "demo")
    report = check_dataset(project)
    assert (len(report.images), len(report.videos)) == (6, 3)
    assert report.errors == [] and report.warnings == []
    items = load_items(project)
    assert all(side % 32 == 0 for item in items for side in item.bucket)
    assert sorted(item.frames for item in items) == [1] * 6 + [9] * 3


def test_a_dataset_resolution_off_32_is_a_lint_error(tmp_path):
    project = create_ti2v_demo_project(tmp_path / "demo")
    (tmp_path / "demo" / "dataset.toml").write_text(
        '[general]\nresolution = [64, 48]\n[[datasets]]\nimage_directory = "dataset"\n'
    )
    text = (tmp_path / "demo" / "wanlora.toml").read_text()
    text = text.replace("[dataset]\n", '[dataset]\ndataset_toml = "dataset.toml"\n')
    (tmp_path / "demo" / "wanlora.toml").write_text(text)
    report = check_dataset(load_project(project.root))
    assert any("multiples of 32" in f.message for f in report.errors)


def test_demo_runs_end_to_end_from_the_cli(tmp_path):
    root = tmp_path / "wanlora-demo-5b"
    r = run_cli("demo", str(root), "--recipe", "wan22-ti2v-5b", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert_the_tutorial_shows_this_run(r, tmp_path, TI2V_DEMO)
    out = " ".join(r.stdout.split())
    assert "6 generated images and 3 videos" in out and "Your LoRA:" in out
    assert "main: trained 9 steps" in out
    # one model, no experts: the verdict says "the LoRA", and so does the report's row
    assert "main: the LoRA changes the prediction by " in out and "noise LoRA" not in out
    verdict = json.loads((root / "output" / "verdict.json").read_text(encoding="utf-8"))
    page = build_report(load_project(root)).read_text(encoding="utf-8")
    section = page[page.index('<section id="verdict">') : page.index('<section id="recipe">')]
    assert "<td>LoRA</td>" in section and " expert</td>" not in section
    assert str(escape(verdict["experts"]["main"]["summary"])) in section
    tensors, meta = read_lora_file(root / "output" / "WAN2.2-5B_Demo5B_v1_by-wanlora.safetensors")
    assert len(tensors) == 60 and meta["modelspec.architecture"] == "wan2.2_ti2v_5b/lora"
    r = run_cli("demo", str(root), "--recipe", "wan22-i2v-14b")
    assert r.returncode != 0 and "no demo for recipe" in r.stderr + r.stdout
