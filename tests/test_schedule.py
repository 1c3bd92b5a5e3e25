"""Learning-rate schedules against the reference's measured values (TRAINER_SPEC.md 7)."""

from __future__ import annotations

import json

import pytest
import torch

from cli_run import run_cli
from wanlora.errors import WanloraError
from wanlora.project_init import init_project
from wanlora.recipes import load_project, load_recipe
from wanlora.train.schedule import (
    lr_schedule,
    make_scheduler,
    min_lr_ratio_note,
    steps_per_epoch,
    total_training_steps,
)


def close(value: float, measured: float) -> bool:
    """Agrees with a measured value to 4 significant digits (half a unit of the 4th digit)."""
    return value == pytest.approx(measured, rel=5e-4)


def test_wan22_polynomial_power8_matches_measured():
    recipe = load_recipe("wan22-t2v")
    lrs = lr_schedule(recipe.scheduler, recipe.optimizer.learning_rate, 1800)
    assert len(lrs) == 1800
    assert lrs[0] == pytest.approx(3e-4)
    assert close(lrs[100], 1.8994e-4)
    assert close(lrs[450], 3.0124e-5)
    assert close(lrs[900], 1.2715e-6)
    assert close(lrs[1799], 1e-7)


def test_wan21_polynomial_power4_matches_measured():
    recipe = load_recipe("wan21-t2v")
    lrs = lr_schedule(recipe.scheduler, recipe.optimizer.learning_rate, 1800)
    assert close(lrs[450], 9.499e-5)
    assert close(lrs[900], 1.884e-5)


def test_polynomial_follows_closed_form_and_ignores_min_lr_ratio():
    settings = load_recipe("wan22-t2v").scheduler
    assert settings.lr_scheduler_min_lr_ratio == 5e-5
    lrs = lr_schedule(settings, 3e-4, 1800)
    for s in (0, 1, 333, 1000, 1799):
        assert lrs[s] == pytest.approx((3e-4 - 1e-7) * (1 - s / 1800) ** 8 + 1e-7, rel=1e-9)
    # ends at lr_end, not at lr * min_lr_ratio (1.5e-8)
    assert min(lrs) == pytest.approx(1e-7) and lrs[-1] == pytest.approx(1e-7)
    note = min_lr_ratio_note(settings)
    assert note and "NOT applied" in note


def test_make_scheduler_drives_a_real_optimizer():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=3e-4)
    scheduler = make_scheduler(optimizer, load_recipe("wan22-t2v").scheduler, 10)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(lr_schedule(load_recipe("wan22-t2v").scheduler, 3e-4, 10))


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("constant", lambda lrs: lrs == pytest.approx([1e-4] * 100)),
        ("linear", lambda lrs: lrs[50] == pytest.approx(5e-5) and lrs[99] == pytest.approx(1e-6)),
        ("cosine", lambda lrs: lrs[50] == pytest.approx(5e-5) and lrs[0] == pytest.approx(1e-4)),
    ],
)
def test_other_schedulers(name, check):
    settings = load_recipe("wan22-t2v").scheduler.model_copy(update={"lr_scheduler": name})
    assert check(lr_schedule(settings, 1e-4, 100))


def test_warmup():
    settings = load_recipe("wan22-t2v").scheduler.model_copy(update={"lr_warmup_steps": 10})
    lrs = lr_schedule(settings, 3e-4, 100)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.5e-4) and lrs[10] == pytest.approx(3e-4)


def test_lr_end_above_lr_is_a_user_error():
    settings = load_recipe("wan22-t2v").scheduler.model_copy(update={"lr_end": 1e-3})
    with pytest.raises(WanloraError, match="lr_end"):
        lr_schedule(settings, 3e-4, 100)


def test_steps_per_epoch():
    assert steps_per_epoch(18, 1, 1) == 18
    assert steps_per_epoch(18, 2, 4) == 9
    assert steps_per_epoch(18, 1, 1, gradient_accumulation_steps=4) == 5


def test_total_training_steps_counts_the_dataset(tmp_path):
    project = init_project(tmp_path / "p", "wan22-t2v", "N", "me")
    assert total_training_steps(project) == 1800  # empty folder: the recipe's 18 images
    for i in range(5):
        (project.dataset_dir / f"{i}.png").write_bytes(b"")
    (project.dataset_dir / "0.txt").write_text("a caption")
    assert total_training_steps(project) == 500
    (project.root / "wanlora.toml").write_text(
        (project.root / "wanlora.toml").read_text()
        + "\n[dataset]\nnum_repeats = 2\nbatch_size = 4\n[training]\nmax_train_epochs = 10\n"
    )
    assert total_training_steps(load_project(project.root)) == 10 * 3


def test_inspect_schedule_json_through_the_cli(tmp_path):
    r = run_cli("inspect", "schedule", "--recipe", "wan22-t2v", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"steps", "lr"}
    assert data["steps"] == 1800 and len(data["lr"]) == 1800
    assert close(data["lr"][100], 1.8994e-4) and close(data["lr"][1799], 1e-7)

    project = init_project(tmp_path / "p", "wan21-t2v", "N", "me")
    for i in range(3):
        (project.dataset_dir / f"{i}.jpg").write_bytes(b"")
    from typer.testing import CliRunner

    from wanlora.cli import app

    r = CliRunner().invoke(app, ["inspect", "schedule", "--project", str(project.root), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["steps"] == 300  # 3 images x 100 epochs
    assert data["lr"] == pytest.approx(lr_schedule(project.config.scheduler, 3e-4, 300))


def test_inspect_schedule_terminal_shows_table_plot_and_min_lr_note():
    from typer.testing import CliRunner

    from wanlora.cli import app

    r = CliRunner().invoke(app, ["inspect", "schedule", "--steps", "100"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "█" in r.output and "▁" in r.output  # the sparkline
    assert "3.0000e-04" in r.output  # step 0
    assert "99" in r.output  # the last step
    assert "min_lr_ratio" in r.output and "NOT applied" in r.output
