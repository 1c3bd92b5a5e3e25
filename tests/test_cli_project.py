"""`wanlora init` / `inspect` through the real CLI entry point (a subprocess)."""

from __future__ import annotations

from cli_run import run_cli
from wanlora.project_init import init_project
from wanlora.recipes import load_project
from wanlora.recipes.project import tomllib


def test_init_creates_project_and_refuses_overwrite(tmp_path):
    root = tmp_path / "mylora"
    r = run_cli(
        "init", str(root), "--recipe", "wan22-t2v", "--name", "MyStyle_v1", "--author", "me"
    )
    assert r.returncode == 0, r.stderr
    assert (root / "dataset").is_dir()
    assert "wanlora check" in r.stdout
    project = load_project(root)
    assert project.config.output_name("high") == "WAN2.2-HighNoise_MyStyle_v1_by-me"

    (root / "wanlora.toml").write_text(
        (root / "wanlora.toml").read_text() + "\n[optimizer]\nlearning_rate = 1e-4\n"
    )
    before = (root / "wanlora.toml").read_text()
    r = run_cli("init", str(root), "--name", "Other", "--author", "x")
    assert r.returncode == 1
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert "Traceback" not in r.stderr
    assert (root / "wanlora.toml").read_text() == before  # untouched

    r = run_cli("init", str(root), "--name", "Other", "--author", "x", "--force")
    assert r.returncode == 0, r.stderr
    assert (root / "wanlora.toml.bak").read_text() == before  # the old one is kept


def test_init_with_bad_name_writes_nothing(tmp_path):
    r = run_cli("init", str(tmp_path / "p"), "--name", "a/b", "--author", "me")
    assert r.returncode == 1
    assert "project.name" in r.stderr
    assert not (tmp_path / "p").exists()


def test_inspect_recipe_prints_valid_toml():
    r = run_cli("inspect", "recipe", "wan22-t2v")
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    assert data["experts"]["high"]["min_timestep"] == 875
    assert data["lora"]["network_dim"] == 16
    # unset settings are shown too, as comments
    assert "# max_vram_gb = (unset: the card's free memory)" in r.stdout.splitlines()
    assert "# every_n_epochs = (unset: no samples during training)" in r.stdout.splitlines()


def test_inspect_config_shows_overrides(tmp_path):
    init_project(tmp_path / "p", "wan21-t2v", "N", "A")
    with open(tmp_path / "p" / "wanlora.toml", "a") as f:
        f.write("\n[lora]\nnetwork_dim = 8\n")
    r = run_cli("inspect", "config", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    assert data["lora"]["network_dim"] == 8 and data["lora"]["network_alpha"] == 32.0


def test_debug_shows_traceback(tmp_path):
    r = run_cli("--debug", "inspect", "config", str(tmp_path))
    assert r.returncode != 0 and "Traceback" in r.stderr
